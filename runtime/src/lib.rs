//! pitcrew-runtime: the core of pitcrew.
//!
//! It knows clusters, nodes, steps, guards and rollback; it knows nothing of
//! the command line, of Rhai, or of any product (HAProxy, Redis). Plugins
//! implement the [`adapter`] traits; the Rhai surface (pitcrew-stdlib) calls
//! the [`executor::Executor`].

pub mod adapter;
pub mod clock;
pub mod drift;
pub mod error;
pub mod event;
pub mod executor;
pub mod guard;
pub mod inventory;
pub mod journal;
pub mod lanes;
pub mod lock;
pub mod recorder;
pub mod source;
pub mod step;
pub mod testing;

pub use adapter::Adapters;
pub use clock::Clock;
pub use error::{AdapterError, ErrorKind, StepError};
pub use event::{Event, EventSink, Outcome};
pub use executor::Executor;
pub use inventory::{Cluster, ClusterKind, Inventory, InventoryError, NodeSpec, Role};
pub use source::SourceFile;
pub use step::Action;
