#!/usr/bin/env python3
"""Side-by-side benchmark: the same rolling patch of N local "hosts" done by
pitcrew (shell adapter), by ansible-playbook (connection local) and by a
plain shell loop (the physical floor).

Standard library only. Called by run.sh, which sets up the Ansible virtualenv
and the work directory; see README.md next to this file.

Each tool runs as one process. Its wall time is measured from its start to
its exit, and its CPU time (user + sys) and peak memory (ru_maxrss) come
from os.wait4 on it: the rusage covers the tool and every descendant it
waited for (pitcrew's `sh -c` commands, Ansible's forks and module
processes, the loop's commands). ru_maxrss is the largest resident set of
any single one of those processes, not a sum. See measure() for why the tool
is started by a small /bin/sh rather than forked from this script.

The figures are printed, never asserted.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time

# ---------------------------------------------------------------------------
# The steps. `{D}` is the host's state directory; each tool renders it its
# own way (pitcrew: {{vars.dir}}, Ansible: {{ dir | quote }}, the loop: a
# shell-quoted path in "$D"), so the commands are the same text everywhere.
# ---------------------------------------------------------------------------

CMD = {
    "drain": "touch {D}/drained",
    "connections": "cat {D}/connections",  # polled until it prints 0
    "patch": "echo 2.0 > {D}/version && echo 'patched to 2.0' >> {D}/log",
    "reboot": "date +%s%N > {D}/boot_id",
    "health": "test -f {D}/version && ! test -f {D}/down",
    "probe": "grep -qx 2.0 {D}/version",  # the sync check
    "undrain": "rm -f {D}/drained",
    # pitcrew only: how it reads the version and the boot id, and undoes a patch.
    "version": "cat {D}/version",
    "boot_id": "cat {D}/boot_id",
}
PITCREW_RESTORE = "echo {{version}} > {D}/version"

INITIAL = {"version": "1.0\n", "connections": "0\n", "boot_id": "boot-0\n"}
EXPECTED = {"version": "2.0\n", "connections": "0\n", "log": "patched to 2.0\n", "boot_id": "<new boot id>"}

TOOLS = ("shell", "pitcrew", "ansible")
POLL_S = 0.01  # poll interval of the waits, where the tool lets us choose


def render(template, d):
    return template.replace("{D}", d)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Hosts and their state
# ---------------------------------------------------------------------------


def host_names(n):
    width = max(3, len(str(n)))
    return [f"h{i:0{width}d}" for i in range(1, n + 1)]


def make_hosts(run_dir, n):
    hosts_dir = os.path.join(run_dir, "hosts")
    os.makedirs(hosts_dir)
    dirs = []
    for name in host_names(n):
        d = os.path.join(hosts_dir, name)
        os.mkdir(d)
        for f, content in INITIAL.items():
            with open(os.path.join(d, f), "w") as fh:
                fh.write(content)
        dirs.append((name, d))
    return dirs


def snapshot(hosts):
    """Per host: file name -> content, with the boot id reduced to whether it
    changed (its value is a timestamp). File times are ignored."""
    snap = {}
    for name, d in hosts:
        files = {}
        for f in sorted(os.listdir(d)):
            p = os.path.join(d, f)
            if os.path.isdir(p):
                files[f + "/"] = "<directory>"
                continue
            with open(p, errors="replace") as fh:
                content = fh.read()
            if f == "boot_id":
                if content == INITIAL["boot_id"]:
                    content = "<initial boot id>"
                else:
                    content = "<new boot id>" if content.strip() else "<empty boot id>"
            files[f] = content
        snap[name] = files
    return snap


def diff_snapshots(a, b, limit=2):
    """Short description of how snapshot a differs from b ('' if equal)."""
    bad = [h for h in sorted(set(a) | set(b)) if a.get(h) != b.get(h)]
    if not bad:
        return ""
    out = []
    for host in bad[:limit]:
        fa, fb = a.get(host), b.get(host)
        if fa is None or fb is None:
            out.append(f"{host} missing")
            continue
        files = [f for f in sorted(set(fa) | set(fb)) if fa.get(f) != fb.get(f)]
        out.append(", ".join(f"{host}/{f} {fa.get(f, '<absent>')!r} vs {fb.get(f, '<absent>')!r}" for f in files))
    return f"{len(bad)} host(s) differ, e.g. " + "; ".join(out)


# ---------------------------------------------------------------------------
# Measuring one child
# ---------------------------------------------------------------------------


class Result:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def become_subreaper():
    """Linux: make orphaned descendants our children, so that a tool started
    by a small intermediate shell can still be waited for (see measure)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


SUBREAPER = False


def measure(argv, cwd, env, run_dir, timeout_s):
    """Runs argv, returns its exit code, wall time and the rusage of it and
    of the descendants it waited for.

    ru_maxrss keeps, across exec, the high-water mark of the memory the
    process had before exec; a tool forked by this Python process would
    report at least Python's own ~15 MiB. So, as a subreaper, we let /bin/sh
    (about 1.5 MiB) fork the tool in the background and exit, and wait4 the
    orphaned tool ourselves: its figures are then its own."""
    out_path = os.path.join(run_dir, "stdout.txt")
    err_path = os.path.join(run_dir, "stderr.txt")
    pid_path = os.path.join(run_dir, "tool.pid")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        if SUBREAPER:
            spawn = ["/bin/sh", "-c", '"$@" & echo $! > "$0"', pid_path] + argv
        else:
            spawn = argv
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                spawn, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
            )
        except OSError as e:
            err.write(f"cannot start {argv[0]}: {e}\n".encode())
            return Result(code=127, wall=0.0, cpu=0.0, rss_kib=0, timed_out=False, stdout=out_path, stderr=err_path)
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the tool is in the shell's process group
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        try:
            if SUBREAPER:
                proc.wait()
                with open(pid_path) as fh:
                    pid = int(fh.read())
            else:
                pid = proc.pid
            _, status, ru = os.wait4(pid, 0)
            wall = time.monotonic() - started
        except BaseException:
            kill()
            raise
        finally:
            timer.cancel()
        if not SUBREAPER:
            proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen never waits again
        # Zombies of descendants the tool left behind (not counted).
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
    return Result(
        code=os.waitstatus_to_exitcode(status),
        wall=wall,
        cpu=ru.ru_utime + ru.ru_stime,
        rss_kib=ru.ru_maxrss,  # KiB on Linux
        timed_out=timed_out.is_set(),
        stdout=out_path,
        stderr=err_path,
    )


def tail(path, lines=12):
    try:
        with open(path, errors="replace") as fh:
            text = fh.read().rstrip("\n").splitlines()
    except OSError:
        return []
    return text[-lines:]


# ---------------------------------------------------------------------------
# The three tools
# ---------------------------------------------------------------------------


def yq(s):
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(s)


def run_pitcrew(cfg, run_dir, hosts, batch):
    n = len(hosts)
    d = "{{vars.dir}}"
    commands = {k: render(CMD[k], d) for k in
                ("version", "patch", "reboot", "health", "drain", "undrain", "connections", "probe", "boot_id")}
    commands["restore"] = render(PITCREW_RESTORE, d)
    lines = [
        "# generated by bench/compare/compare.py",
        "adapters:",
        "  hosts:",
        "    kind: shell",
        "    settings:",
        "      timeout: 30s",
        f"      poll_interval: {int(POLL_S * 1000)}ms",
        "      commands:",
    ]
    lines += [f"        {k}: {yq(v)}" for k, v in commands.items()]
    lines += [
        "clusters:",
        "  pool:",
        "    kind: pool",
        "    adapters: { traffic: hosts, host: hosts, probe: hosts }",
        "    policy:",
        f"      min_in_service: {n - batch}",
        f"      batch: {batch}",
        "      maintenance_window: 10h",
        "    nodes:",
    ]
    lines += [f"      - {{ name: {name}, address: 127.0.0.1, vars: {{ dir: {yq(hd)} }} }}" for name, hd in hosts]
    inventory = os.path.join(run_dir, "inventory.yaml")
    with open(inventory, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    argv = [cfg.pitcrew, "--state-dir", os.path.join(run_dir, "state"), "run", cfg.playbook,
            "-i", inventory, "--param", f"batch={batch}", "-q"]
    if not os.access(cfg.pitcrew, os.X_OK):
        with open(os.path.join(run_dir, "stderr.txt"), "w") as fh:
            fh.write(f"{cfg.pitcrew}: not found or not executable (build it with `cargo build --release`, "
                     "or set PITCREW_BIN)\n")
        return Result(code=127, wall=0.0, cpu=0.0, rss_kib=0, timed_out=False,
                      stdout=os.path.join(run_dir, "stdout.txt"), stderr=os.path.join(run_dir, "stderr.txt"))
    return measure(argv, run_dir, dict(os.environ), run_dir, cfg.timeout)


def run_ansible(cfg, run_dir, hosts, batch, serial):
    d = "{{ dir | quote }}"
    inventory = {"all": {"children": {"pool": {"hosts": {
        name: {"ansible_connection": "local", "ansible_python_interpreter": cfg.venv_python, "dir": hd}
        for name, hd in hosts
    }}}}}
    inv_path = os.path.join(run_dir, "hosts.yml")
    with open(inv_path, "w") as fh:
        json.dump(inventory, fh, indent=1)  # JSON is YAML

    def sh(name, cmd, **extra):
        task = {"name": name, "ansible.builtin.shell": {"cmd": render(cmd, d)}}
        task.update(extra)
        return task

    wait = {"retries": 300, "delay": 1}  # both waits pass at the first try here
    tasks = [
        sh("drain", CMD["drain"]),
        sh("wait drained", CMD["connections"], register="conns",
           until="conns.stdout | int == 0", changed_when=False, **wait),
        sh("patch", CMD["patch"]),
        sh("reboot", CMD["reboot"]),
        sh("health", CMD["health"], register="health", until="health.rc == 0", changed_when=False, **wait),
        sh("sync check", CMD["probe"], changed_when=False),
        sh("undrain", CMD["undrain"]),
    ]
    play = [{
        "name": "rolling patch",
        "hosts": "pool",
        "gather_facts": False,
        "serial": serial,
        "max_fail_percentage": 0,
        "tasks": tasks,
    }]
    pb_path = os.path.join(run_dir, "rolling.yml")
    with open(pb_path, "w") as fh:
        json.dump(play, fh, indent=1)
    home = os.path.join(run_dir, "ansible-home")
    os.mkdir(home)
    cfg_path = os.path.join(run_dir, "ansible.cfg")
    open(cfg_path, "w").close()  # an empty config: no ~/.ansible.cfg or /etc/ansible/ansible.cfg
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": cfg_path,
        "ANSIBLE_HOME": home,
        "ANSIBLE_LOCAL_TEMP": os.path.join(home, "tmp"),
        "ANSIBLE_REMOTE_TEMP": os.path.join(home, "remote-tmp"),
        "ANSIBLE_NOCOLOR": "1",
    })
    forks = max(5, batch)  # 5 is Ansible's default
    argv = [cfg.ansible_playbook, "-i", inv_path, "-f", str(forks), pb_path]
    if not os.access(cfg.ansible_playbook, os.X_OK):
        with open(os.path.join(run_dir, "stderr.txt"), "w") as fh:
            fh.write(f"{cfg.ansible_playbook}: not found (the virtualenv install of ansible-core failed?)\n")
        return Result(code=127, wall=0.0, cpu=0.0, rss_kib=0, timed_out=False,
                      stdout=os.path.join(run_dir, "stdout.txt"), stderr=os.path.join(run_dir, "stderr.txt"))
    return measure(argv, run_dir, env, run_dir, cfg.timeout)


def run_shell(cfg, run_dir, hosts, batch):
    d = '"$D"'
    fail = '|| { echo "{step} failed on $D" >&2; return 1; }'

    def line(step, cmd):
        return f"  {{ {cmd}; }} " + fail.replace("{step}", step)

    body = [
        line("drain", render(CMD["drain"], d)),
        f'  until [ "$({render(CMD["connections"], d)})" -eq 0 ]; do sleep {POLL_S}; done',
        line("patch", render(CMD["patch"], d)),
        line("reboot", render(CMD["reboot"], d)),
        f"  until {render(CMD['health'], d)}; do sleep {POLL_S}; done",
        line("sync check", render(CMD["probe"], d)),
        line("undrain", render(CMD["undrain"], d)),
    ]
    script = ["#!/bin/sh", "# generated by bench/compare/compare.py", "host() {", "  D=$1"] + body + ["}"]
    if batch == 1:
        script += [f"host {shlex.quote(hd)} || exit 1" for _, hd in hosts]
    else:
        script += [
            "batch() {",
            "  pids=",
            '  for D in "$@"; do host "$D" & pids="$pids $!"; done',
            "  rc=0",
            '  for p in $pids; do wait "$p" || rc=1; done',
            "  return $rc",
            "}",
        ]
        for i in range(0, len(hosts), batch):
            group = " ".join(shlex.quote(hd) for _, hd in hosts[i:i + batch])
            script.append(f"batch {group} || exit 1")
    path = os.path.join(run_dir, "rolling.sh")
    with open(path, "w") as fh:
        fh.write("\n".join(script) + "\n")
    return measure(["/bin/sh", path], run_dir, dict(os.environ), run_dir, cfg.timeout)


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total():
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1048576:.0f} GiB"
    except OSError:
        pass
    return "unknown"


def first_line(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0] if text else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "not available"


def built(path):
    try:
        when = datetime.datetime.fromtimestamp(os.stat(path).st_mtime).astimezone()
    except OSError:
        return ""
    return f", built {when:%Y-%m-%d %H:%M %Z}"


def ratio(a, b):
    if a is None or b is None or b <= 0:
        return "—"
    r = a / b
    return f"{r:.2f}×" if r < 1 else f"{r:.1f}×" if r < 100 else f"{r:.0f}×"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[10, 50, 200])
    ap.add_argument("--work", required=True, help="scratch directory (outside the repository)")
    ap.add_argument("--pitcrew", required=True)
    ap.add_argument("--playbook", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--tools", default="shell,pitcrew,ansible")
    ap.add_argument("--modes", default="serial,batch")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed for one tool run")
    cfg = ap.parse_args()
    global SUBREAPER
    SUBREAPER = become_subreaper()
    cfg.venv_python = os.path.join(cfg.venv, "bin", "python")
    cfg.ansible_playbook = os.path.join(cfg.venv, "bin", "ansible-playbook")
    tools = [t for t in TOOLS if t in cfg.tools.split(",")]
    modes = [m for m in ("serial", "batch") if m in cfg.modes.split(",")]
    if any(n < 1 for n in cfg.sizes):
        ap.error("every N must be at least 1")

    started_at = datetime.datetime.now().astimezone()
    env_lines = [
        f"Measured on {started_at:%Y-%m-%d %H:%M %Z} on {platform.node() or 'this machine'}: "
        f"`nproc` = {len(os.sched_getaffinity(0))}, "
        f"{cpu_model()}, {mem_total()} RAM, Linux {platform.release()}; "
        f"load average {os.getloadavg()[0]:.2f} at the start.",
        f"pitcrew: `{first_line([cfg.pitcrew, '--version'])}` ({cfg.pitcrew}{built(cfg.pitcrew)}); "
        f"Ansible: `{first_line([cfg.ansible_playbook, '--version'])}` on Python {first_line([cfg.venv_python, '-c', 'import platform; print(platform.python_version())'])}; "
        f"shell: /bin/sh -> {os.path.realpath('/bin/sh')}.",
    ]
    for line in env_lines:
        log(line)

    results = {}  # (n, mode, tool) -> Result
    failures = []
    disagreements = []
    for n in cfg.sizes:
        for mode in modes:
            batch = 1 if mode == "serial" else max(1, n * 25 // 100)  # as Ansible's serial: "25%"
            snaps = {}
            for tool in tools:
                run_dir = os.path.join(cfg.work, f"n{n}-{mode}-{tool}")
                os.makedirs(run_dir)
                hosts = make_hosts(run_dir, n)
                log(f"N={n} {mode} (batch {batch}): {tool} ...")
                if tool == "pitcrew":
                    r = run_pitcrew(cfg, run_dir, hosts, batch)
                elif tool == "ansible":
                    r = run_ansible(cfg, run_dir, hosts, batch, 1 if mode == "serial" else "25%")
                else:
                    r = run_shell(cfg, run_dir, hosts, batch)
                snap = snapshot(hosts)
                snaps[tool] = snap
                expected = {name: dict(EXPECTED) for name, _ in hosts}
                wrong = diff_snapshots(snap, expected)
                r.ok = r.code == 0 and not r.timed_out
                r.state_ok = not wrong
                r.state_note = wrong
                r.batch = batch
                if r.ok:
                    log(f"  exit 0, {r.wall:.2f} s wall, {r.cpu:.2f} s CPU, {r.rss_kib / 1024:.1f} MiB max RSS; "
                        f"state {'as expected' if r.state_ok else 'WRONG: ' + wrong}")
                else:
                    why = f"timed out after {cfg.timeout:.0f} s (killed)" if r.timed_out else f"exit code {r.code}"
                    log(f"  {tool} FAILED: {why}, after {r.wall:.2f} s. Last lines of its stderr ({r.stderr}):")
                    lines = tail(r.stderr) or [f"(stderr empty; stdout: {r.stdout})"] + tail(r.stdout)
                    for l in lines:
                        log(f"    | {l}")
                    failures.append((n, mode, tool, why, lines[-1] if lines else ""))
                results[(n, mode, tool)] = r
            # Do the tools end in the same state? (Those that succeeded; a
            # failed run's state is already marked against the expected one.)
            names = [t for t in snaps if results[(n, mode, t)].ok]
            for o in names[1:]:
                d = diff_snapshots(snaps[o], snaps[names[0]])
                log(f"  final state, {o} vs {names[0]}: {'same' if not d else d}")
                if d:
                    disagreements.append(f"N={n} {mode}: {o} vs {names[0]}: {d}")

    # ---- the table -------------------------------------------------------
    out = []
    out.append("")
    out.append("### pitcrew vs Ansible vs a shell loop: rolling patch of N local hosts")
    out.append("")
    out += env_lines
    out.append("")
    out.append("| N | mode | tool | result | final state | wall s | CPU s (user+sys) | max RSS MiB | wall per host ms |")
    out.append("|---:|---|---|---|---|---:|---:|---:|---:|")
    for n in cfg.sizes:
        for mode in modes:
            for tool in tools:
                r = results[(n, mode, tool)]
                label = "serial 1" if mode == "serial" else f"25% (batch {r.batch})"
                if r.ok:
                    res = "ok"
                elif r.timed_out:
                    res = "timed out"
                else:
                    res = f"failed (exit {r.code})"
                state = "as expected" if r.state_ok else "not as expected"
                if r.ok:
                    nums = f"{r.wall:.2f} | {r.cpu:.2f} | {r.rss_kib / 1024:.1f} | {1000 * r.wall / n:.1f}"
                else:
                    nums = "— | — | — | —"
                out.append(f"| {n} | {label} | {tool} | {res} | {state} | {nums} |")
    if "pitcrew" in tools and ("ansible" in tools or "shell" in tools):
        out.append("")
        out.append("| N | mode | ansible/pitcrew wall | CPU | max RSS | pitcrew/shell wall | CPU | max RSS |")
        out.append("|---:|---|---:|---:|---:|---:|---:|---:|")
        for n in cfg.sizes:
            for mode in modes:
                p = results[(n, mode, "pitcrew")]
                a = results.get((n, mode, "ansible"))
                s = results.get((n, mode, "shell"))

                def fig(r, attr):
                    return getattr(r, attr) if r is not None and r.ok else None

                label = "serial 1" if mode == "serial" else f"25% (batch {p.batch})"
                cells = [
                    ratio(fig(a, "wall"), fig(p, "wall")),
                    ratio(fig(a, "cpu"), fig(p, "cpu")),
                    ratio(fig(a, "rss_kib"), fig(p, "rss_kib")),
                    ratio(fig(p, "wall"), fig(s, "wall")),
                    ratio(fig(p, "cpu"), fig(s, "cpu")),
                    ratio(fig(p, "rss_kib"), fig(s, "rss_kib")),
                ]
                out.append(f"| {n} | {label} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Wall: spawn to exit of the tool. CPU: user + sys of the tool and every process it waited for "
               "(os.wait4). Max RSS: the largest single process among them. One run each; printed, not asserted.")
    if not SUBREAPER:
        out.append("(Could not become a child subreaper: each max RSS includes the ~15 MiB this Python "
                   "script had when it forked the tool.)")
    if len(tools) > 1:
        out.append("")
        if disagreements:
            out.append("The tools did NOT all end in the same per-host state:")
            out.append("")
            out += [f"- {d}" for d in disagreements]
        else:
            out.append("Every tool that succeeded ended in the same per-host state as the others "
                       "(file contents compared, boot ids only as changed or not, times ignored).")
    if failures:
        out.append("")
        out.append("Failed runs (their figures are left out):")
        out.append("")
        for n, mode, tool, why, last in failures:
            out.append(f"- N={n} {mode}, {tool}: {why}: {last}")
    print("\n".join(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
