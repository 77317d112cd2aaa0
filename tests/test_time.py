"""The guest's clock never goes backwards and keeps to the host's, across host pauses.

A guest under load samples its wall clock (adjtimex, in microseconds) and its
monotonic clock (/proc/timer_list) in a loop, while the host freezes the whole
engine with SIGSTOP for a few seconds, as a suspended laptop would, and then
lets it go on with SIGCONT.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import threading
import time

from conftest import Colinux, processes_mentioning

# Guest seconds of sampling; COLINUX_CLOCK_TEST_SECONDS=60 checks the full minute.
RUN_S = int(os.environ.get("COLINUX_CLOCK_TEST_SECONDS", "9"))
PAUSE_S = 3.0

SAMPLER = f"""
nice -n 19 sh -c "while :; do :; done" &
end=$(( $(date +%s) + {RUN_S} ))
while [ "$(date +%s)" -lt "$end" ]; do
    set -- $(adjtimex | sed -n 's/.*time.tv_u*sec: *//p')
    mono=$(sed -n 's/^now at \\([0-9]*\\) nsecs/\\1/p' /proc/timer_list)
    echo "T $1 $2 $mono"
    sleep 0.05
done
kill %1
"""


def traced(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.split() == ["TracerPid:", "0"] for line in f) is False
    except OSError:
        return False


def signal_engine(name: str, signum: int) -> None:
    """Freeze or thaw the engine: the UML kernel's host processes and the sandbox.

    The guest's own processes are left alone: UML ptraces them, so a stop
    signal would reach the guest kernel as a signal for them rather than
    pause them; they run only when the frozen kernel lets them.
    """
    # Twice: a process the engine started while the first pass ran gets it too.
    for _ in range(2):
        for pid in processes_mentioning(f"umid={name}"):
            if traced(pid):
                continue
            with contextlib.suppress(ProcessLookupError):  # a guest process that ended
                os.kill(pid, signum)


def test_guest_clock_is_monotonic_and_within_a_second_across_a_pause(colinux: Colinux) -> None:
    guest = colinux.popen(
        "run", "--name", "clock", "--", "sh", "-c", SAMPLER,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert guest.stdout is not None
    samples: list[tuple[float, float, int]] = []  # host time at receipt, guest wall, guest mono

    def read() -> None:
        assert guest.stdout is not None
        for line in guest.stdout:
            words = line.split()
            if len(words) == 4 and words[0] == b"T":
                wall = int(words[1]) + int(words[2]) / 1e6
                samples.append((time.time(), wall, int(words[3])))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while len(samples) < 10:
            assert time.monotonic() < deadline and guest.poll() is None, guest.stderr
            time.sleep(0.05)
        stopped = time.time()
        signal_engine("clock", signal.SIGSTOP)
        time.sleep(PAUSE_S)
        resumed = time.time()
        signal_engine("clock", signal.SIGCONT)
        assert guest.wait(60) == 0, guest.stderr.read() if guest.stderr else ""
        reader.join(10)
    finally:
        if guest.poll() is None:
            signal_engine("clock", signal.SIGCONT)
            guest.kill()
            guest.wait()

    walls = [s[1] for s in samples]
    monos = [s[2] for s in samples]
    assert walls == sorted(walls), "the guest's wall clock went backwards"
    assert monos == sorted(monos), "the guest's monotonic clock went backwards"
    after = [s for s in samples if s[0] > resumed + 0.5]
    assert len(after) >= 5, f"only {len(after)} samples after the pause"
    for host, wall, _ in samples:
        # A line can only be read after the guest wrote it, and (outside the
        # pause, when the engine could not run) not long after.
        assert wall <= host + 0.05, (host, wall)
        if not stopped <= host <= resumed + 0.5:
            assert host - wall < 1.0, (host, wall)
    # The pause shows in the guest's clocks: time went on while it was frozen.
    gap = max(b[1] - a[1] for a, b in itertools.pairwise(samples))
    assert gap >= PAUSE_S * 0.9, gap
