"""Fuzz targets that may crash the interpreter, hang in compiled code or exhaust memory
run here, in a child process with its address space capped, so that a crash or a
runaway allocation fails one target instead of killing the test run (or the machine).

Parent side: ``run_group(module, group)`` is what the targets of
``module.targets(group)`` (a dict name -> hypothesis test) did under the current
hypothesis profile. The targets of the groups asked for (by default every group in
``module.GROUPS``) run in one child (started once per module and profile, for speed);
when it crashes or hangs in a target, that target is recorded as such and a new child
carries on with the targets after it, so one crash hides nothing else.
``start(module, groups)`` launches that work in the background (conftest.py does so when
the session begins, for the groups of the selected tests), so the children run while the
other tests do.

Child side: ``python isolated.py MODULE PROFILE [SKIP...]`` prints "RUN group: name"
before each target (of the groups named in $FASTGRAD_FUZZ_GROUPS, comma-separated, or of
all groups when it is unset) and "PASS name" / "FAILED name" after it (with the failure on
stderr), preceded by "EXAMPLES name | how many examples ran" (``Outcome.statistics()``;
the tests print it, shown with -rP). ``watchdog()`` lets a target bound a single call: past its deadline the child
dumps its stack and exits at once, even from a compiled loop that holds the GIL
(faulthandler's timer is a C thread).
"""

import atexit
import faulthandler
import importlib
import os
import resource
import signal
import subprocess
import sys
import threading
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
MEMORY_LIMIT = 4 << 30  # bytes of address space: far below "terabytes", far above the tests' needs
CHILD_TIMEOUTS = {"ci": 600}  # seconds per child; other profiles (long) run as long as they need


class Outcome:
    """What targets did: {"group: name": "PASS" | "FAILED" | "HUNG ..." | "CRASHED ..."},
    how many examples hypothesis ran for each ({"group: name": summary}), and the
    failures' reports (stderr blocks that start with "===== group: name")."""

    def __init__(self):
        self.status, self.examples, self.stderr = {}, {}, ""

    def group(self, group):
        """The part of this outcome about one group."""
        part = Outcome()
        part.status = {k: v for k, v in self.status.items() if k.startswith(group + ": ") or k.startswith("(")}
        part.examples = {k: v for k, v in self.examples.items() if k in part.status}
        blocks = self.stderr.split("===== ")
        part.stderr = blocks[0] + "".join(
            "===== " + b for b in blocks[1:] if b.startswith(group + ": ") and b.count("\n") > 1
        )
        return part

    @property
    def ok(self):
        return bool(self.status) and all(s == "PASS" for s in self.status.values())

    def statistics(self):
        """One line per target: its status and the examples hypothesis ran."""
        return "\n".join(
            f"{name}: {status}; {self.examples.get(name, 'no statistics')}" for name, status in self.status.items()
        )

    def explain(self):
        bad = {name: s for name, s in self.status.items() if s != "PASS"}
        lines = [f"  {name}: {s}" for name, s in bad.items()]
        return (
            "targets that did not pass:\n" + "\n".join(lines) + f"\n--- child stderr (tail) ---\n{self.stderr[-15000:]}"
        )


def _text(data):
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


_runs = {}  # (module, profile) -> [thread, Outcome or None]
_children = set()  # the child processes running now


@atexit.register
def _stop_children():
    """A session that ends early (-x, Ctrl-C) does not leave its children running."""
    for child in list(_children):
        child.kill()


def start(module, groups=None):
    """Begin running the targets of ``groups`` (default: all) of ``module`` in the
    background (once per profile)."""
    from hypothesis import settings

    key = (module, settings.get_current_profile_name())
    if key not in _runs:
        entry = _runs[key] = [None, None, None if groups is None else set(groups)]

        def work():
            entry[1] = _run_module(*key, entry[2])

        entry[0] = threading.Thread(target=work, name=f"fuzz child {module}", daemon=True)
        entry[0].start()
    return _runs[key]


def run_group(module, group):
    """What the targets of ``module.targets(group)`` did, in memory-capped children."""
    entry = start(module)
    if entry[2] is not None and group not in entry[2]:
        raise RuntimeError(f"the child of {module} was started without group {group!r}")
    entry[0].join()
    if entry[1] is None:
        raise RuntimeError(f"running the targets of {module} failed (see the output above)")
    return entry[1].group(group)


def _run_module(module, profile, groups):
    import fastgrad

    repo = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([repo, HERE] + [p for p in [env.get("PYTHONPATH")] if p])
    if groups is not None:
        env["FASTGRAD_FUZZ_GROUPS"] = ",".join(sorted(groups))
    else:
        env.pop("FASTGRAD_FUZZ_GROUPS", None)
    if _sanitized():
        # the memory cap, enforced by ASan's allocator (see _child): a larger request
        # fails (NULL, hence MemoryError), a process that grows past it is ended
        limit_mb = MEMORY_LIMIT >> 20
        env["ASAN_OPTIONS"] = ":".join(
            o
            for o in [env.get("ASAN_OPTIONS"), f"max_allocation_size_mb={limit_mb}", f"hard_rss_limit_mb={limit_mb}"]
            if o
        )
    outcome = Outcome()
    while True:
        command = [sys.executable, os.path.abspath(__file__), module, profile, *outcome.status]
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        _children.add(child)
        try:
            out, err = child.communicate(timeout=CHILD_TIMEOUTS.get(profile))
            returncode = child.returncode
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
            returncode = None
        finally:
            _children.discard(child)
        out, err = _text(out), _text(err)
        outcome.stderr += err
        running = None
        for line in out.splitlines():
            word, _, name = line.partition(" ")
            if word == "RUN":
                running = name
            elif word in ("PASS", "FAILED"):
                outcome.status[name] = word
                running = None
            elif word == "EXAMPLES":
                name, _, summary = name.partition(" | ")
                outcome.examples[name] = summary
        if running is None:  # every target reported (or the child died before the first)
            if returncode not in (0, 1) or not outcome.status:
                outcome.status["(child process)"] = f"exited with {returncode}, running no target"
            return outcome
        if returncode is None:
            outcome.status[running] = "HUNG (the child timed out)"
        elif returncode < 0:
            outcome.status[running] = f"CRASHED with {signal.Signals(-returncode).name}"
        elif "Timeout (" in err:
            outcome.status[running] = "HUNG (one call outlived its watchdog)"
        else:
            outcome.status[running] = f"the child exited with {returncode}"


class watchdog:
    """``with watchdog(seconds):`` ends the child (dumping every thread's stack, which
    the parent reports as a hang) if the block is still running after ``seconds``."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        faulthandler.dump_traceback_later(self.seconds, exit=True)

    def __exit__(self, *exc):
        faulthandler.cancel_dump_traceback_later()


def _examples_run(statistics):
    """'N passing, M failing, K invalid examples; stopped because ...' from the run
    statistics hypothesis reports (its --hypothesis-show-statistics data): the examples
    replayed from its database and the generated ones, not the shrinking steps."""
    cases = [
        case
        for phase in ("explicit", "reuse", "generate", "target")
        for case in statistics.get(f"{phase}-phase", {}).get("test-cases", [])
    ]
    count = {
        status: sum(1 for case in cases if case.get("status") == status)
        for status in ("valid", "interesting", "invalid", "overrun")
    }
    return (
        f"{count['valid']} passing, {count['interesting']} failing, "
        f"{count['invalid'] + count['overrun']} invalid examples; "
        f"stopped because {statistics.get('stopped-because', 'the examples ran out')}"
    )


def _sanitized():
    return os.environ.get("FASTGRAD_SANITIZED") == "1"


def _child(module_name, profile, skip):
    # Under AddressSanitizer (scripts/sanitize.sh) the process has reserved terabytes of
    # address space for shadow memory before any Python runs, so an address-space cap
    # would make every later allocation fail; there the parent has set ASan's own
    # allocation limits instead.
    if not _sanitized():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    sys.path.insert(0, HERE)
    from hypothesis import settings
    from hypothesis.statistics import collector

    import fuzz_common

    fuzz_common.register_profiles()
    settings.load_profile(profile)
    module = importlib.import_module(module_name)
    failed = False
    chosen = os.environ.get("FASTGRAD_FUZZ_GROUPS")
    groups = module.GROUPS if chosen is None else [g for g in module.GROUPS if g in chosen.split(",")]
    everything = {f"{group}: {name}": test for group in groups for name, test in module.targets(group).items()}
    for name, test in everything.items():
        if name in skip:
            continue
        print(f"RUN {name}", flush=True)
        sys.stderr.write(f"===== {name}\n")  # what follows on stderr is about this target
        sys.stderr.flush()
        statistics = []
        try:
            with collector.with_value(statistics.append):
                test()
        except Exception:  # noqa: BLE001 - reported, then the next target runs
            traceback.print_exc()
            sys.stderr.flush()
            outcome = "FAILED"
            failed = True
        else:
            outcome = "PASS"
        if statistics:
            print(f"EXAMPLES {name} | {_examples_run(statistics[-1])}", flush=True)
        print(f"{outcome} {name}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2], set(sys.argv[3:])))
