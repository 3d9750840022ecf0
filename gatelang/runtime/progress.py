"""Progress of a whole plan: pass i of N, elapsed time, an ETA, and the current pass's bar.

One display covers the run, not one bar per pass, because a user waiting on `apply` wants to
know how much is left of the whole job. The ETA comes from the plan's cost estimate: every node
carries estimated forward/backward passes, so once some work has run, seconds per unit of cost
times the cost still to run is the time left. Cached nodes cost nothing and leave the estimate.

Two renderings: on a terminal a rich live display (overall bar plus the pass's own bar); when
stderr is not a terminal (CI logs), plain lines: one per finished pass and a heartbeat at least
every `heartbeat_s` seconds, so a long pass never looks like a hang to a CI watchdog or a
person reading the log.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal

Mode = Literal["rich", "plain", "off"]

# CI systems commonly kill a job that prints nothing for 10 minutes; people give up sooner.
HEARTBEAT_S = 30.0
# Seconds of executed work before an ETA is shown: a rate from a few milliseconds of data
# passes says nothing about the edit that follows.
MIN_RATE_S = 1.0


def cost_weight(cost: Any) -> float:
    """A node's share of the run time, from its plan cost estimate.

    A backward pass costs about two forward passes; every node gets at least one unit so a
    node estimated at zero (reading data, scoring requirements) still counts as a step.
    """
    if cost is None:
        return 1.0
    get = cost.get if isinstance(cost, dict) else (lambda k, d=0: getattr(cost, k, d))
    return 1.0 + float(get("forward_passes", 0) or 0) + 2.0 * float(get("backward_passes", 0) or 0)


def format_seconds(seconds: float) -> str:
    """`42s`, `3m05s`, `1h02m`: short enough for a status line."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@dataclass
class _Step:
    id: str
    op: str
    label: str
    weight: float


class _Bar:
    """The handle a pass gets from `ctx.progress(total, desc)`; forwards to the display."""

    def __init__(self, owner: PlanProgress, total: int, desc: str) -> None:
        self.owner, self.total, self.desc, self.n = owner, max(0, int(total)), desc, 0
        self._task: Any = None
        self.closed = False
        owner._bar_open(self)

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        self.owner._bar_update(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.owner._bar_close(self)

    @property
    def fraction(self) -> float:
        return min(1.0, self.n / self.total) if self.total else 0.0


class PlanProgress:
    """The display of one plan run; the executor reports to it, passes update their bars.

    `mode`: ``rich`` (live display), ``plain`` (lines, heartbeat) or ``off``. `stream` is where
    it writes (stderr by default), `clock` is injectable so tests need not sleep.
    """

    def __init__(self, mode: Mode = "plain", *, stream: IO[str] | None = None,
                 heartbeat_s: float = HEARTBEAT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.mode: Mode = mode
        self.stream = stream if stream is not None else sys.stderr
        self.heartbeat_s = float(heartbeat_s)
        self.clock = clock
        self._lock = threading.RLock()
        self._steps: list[_Step] = []
        self._index: dict[str, int] = {}
        self._done_weight = 0.0  # cost of executed (not cached) finished nodes
        self._skipped_weight = 0.0  # cost of cached or overridden nodes
        self._exec_s = 0.0  # seconds spent in executed finished nodes
        self._current: int | None = None
        self._current_t0 = 0.0
        self._status = "starting"
        self._bar: _Bar | None = None
        self._t0 = clock()
        self._last_line = self._t0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rich: Any = None
        self._overall: Any = None
        if mode == "rich":
            self._start_rich()
        if mode == "plain" and self.heartbeat_s > 0:
            self._thread = threading.Thread(target=self._heartbeat_loop, daemon=True,
                                            name="gatelang-heartbeat")
            self._thread.start()

    # -- what the driver and executor call ------------------------------------------------

    def note(self, message: str) -> None:
        """A status line outside any pass (loading the model, writing artifacts)."""
        with self._lock:
            self._status = message
            self._emit(message)

    def begin(self, steps: Sequence[tuple[str, str, str, Any]]) -> None:
        """The nodes that will run, in order, as (id, op, label, plan cost)."""
        with self._lock:
            self._steps = [_Step(i, op, label, cost_weight(c)) for i, op, label, c in steps]
            self._index = {s.id: k for k, s in enumerate(self._steps)}
            if self._overall is not None:
                self._rich.update(self._overall, total=self._total_weight(), completed=0,
                                  description=self._headline(), eta=self._eta_text())

    def start(self, node_id: str) -> None:
        with self._lock:
            self._current = self._index.get(node_id)
            self._current_t0 = self.clock()
            self._status = ""
            self._refresh()

    def finish(self, node_id: str, seconds: float, cached: bool) -> None:
        with self._lock:
            k = self._index.get(node_id)
            weight = self._steps[k].weight if k is not None else 0.0
            if cached:
                self._skipped_weight += weight
            else:
                self._done_weight += weight
                self._exec_s += max(0.0, float(seconds))
            took = "cached" if cached else format_seconds(seconds)
            line = f"{self._position()} {self._name()} {took}"
            self._current = None
            self._bar = None
            if self.mode == "rich":
                self._rich.console.print(f"[green]✓[/green] {line}", highlight=False,
                                         markup=True)
            else:
                self._emit(line + self._eta_suffix())
            self._refresh()

    def bar(self, total: int, desc: str) -> _Bar:
        """The progress factory handed to passes (`PassContext(progress=...)`)."""
        return _Bar(self, total, desc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def __enter__(self) -> PlanProgress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the estimate -----------------------------------------------------------------------

    def _total_weight(self) -> float:
        return sum(s.weight for s in self._steps) or 1.0

    def _current_fraction(self) -> float:
        return self._bar.fraction if self._bar is not None else 0.0

    def eta_seconds(self) -> float | None:
        """Seconds left, or None until at least `MIN_RATE_S` of executed work gives a rate.

        The current pass counts by its bar's fraction; a pass whose bar has no total (or no
        bar) adds nothing to the rate, and its time so far is taken off its own estimate.
        """
        with self._lock:
            now = self.clock()
            done = self._done_weight
            spent = self._exec_s
            running = 0.0
            if self._current is not None:
                running = now - self._current_t0
                frac = self._current_fraction()
                if frac > 0:
                    done += self._steps[self._current].weight * frac
                    spent += running
                    running = 0.0
            if done <= 0 or spent < MIN_RATE_S:
                return None
            left = self._total_weight() - self._skipped_weight - done
            return max(0.0, left * spent / done - running)

    def _eta_text(self) -> str:
        eta = self.eta_seconds()
        return "ETA once a pass has run" if eta is None else f"ETA {format_seconds(eta)}"

    def _eta_suffix(self) -> str:
        return f" · {format_seconds(self.clock() - self._t0)} elapsed · {self._eta_text()}"

    # -- text -------------------------------------------------------------------------------

    def _position(self) -> str:
        if self._current is None:
            return ""
        return f"[{self._current + 1}/{len(self._steps)}]"

    def _name(self) -> str:
        if self._current is None:
            return self._status
        s = self._steps[self._current]
        return f"{s.op}" + (f" ({s.label})" if s.label and s.label != s.op else "")

    def _headline(self) -> str:
        if self._current is None:
            return self._status or "gatelang"
        return f"pass {self._current + 1} of {len(self._steps)}: {self._steps[self._current].op}"

    def heartbeat_line(self) -> str:
        with self._lock:
            what = self._name() or "working"
            if self._bar is not None and self._current is not None:
                what = self._steps[self._current].op
                pct = (f" {100 * self._bar.fraction:.0f}%" if self._bar.total
                       else f" {self._bar.n} steps")
                what += f": {self._bar.desc}{pct}"
            return " ".join(x for x in ("…", self._position(), what) if x) + self._eta_suffix()

    # -- output -----------------------------------------------------------------------------

    def _emit(self, line: str) -> None:
        if self.mode == "off":
            return
        if self.mode == "rich":
            if self._rich is not None:
                self._rich.console.print(line, highlight=False, markup=False)
            return
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe must not kill the run
            pass
        self._last_line = self.clock()

    def _heartbeat_loop(self) -> None:
        step = min(1.0, self.heartbeat_s / 4)
        while not self._stop.wait(step):
            with self._lock:
                if self.clock() - self._last_line >= self.heartbeat_s:
                    self._emit(self.heartbeat_line())

    def heartbeat_due(self) -> bool:
        """Whether the plain display owes a heartbeat now (what its thread checks)."""
        return self.clock() - self._last_line >= self.heartbeat_s

    # -- rich -------------------------------------------------------------------------------

    def _start_rich(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        console = Console(file=self.stream, stderr=self.stream is sys.stderr)
        self._rich = Progress(
            TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
            console=console, transient=True, refresh_per_second=4)
        self._overall = self._rich.add_task("gatelang", total=1.0, eta="")
        self._rich.start()

    def _refresh(self) -> None:
        if self._rich is None or self._overall is None:
            return
        done = self._done_weight + self._skipped_weight
        if self._current is not None:
            done += self._steps[self._current].weight * self._current_fraction()
        self._rich.update(self._overall, completed=done, total=self._total_weight(),
                          description=self._headline(), eta=self._eta_text())

    def _bar_open(self, bar: _Bar) -> None:
        with self._lock:
            self._bar = bar
            if self._rich is not None:
                bar._task = self._rich.add_task(f"  {bar.desc}", total=bar.total or None, eta="")

    def _bar_update(self, bar: _Bar) -> None:
        with self._lock:
            if self._rich is not None and bar._task is not None:
                self._rich.update(bar._task, completed=bar.n)
            self._refresh()

    def _bar_close(self, bar: _Bar) -> None:
        with self._lock:
            if self._rich is not None and bar._task is not None:
                self._rich.remove_task(bar._task)
            if self._bar is bar:
                self._bar = None


def choose_mode(enabled: bool | None, stream: IO[str] | None = None) -> Mode:
    """`enabled` None: a live display on a terminal, nothing elsewhere (library default);
    True: a live display on a terminal, plain lines and heartbeats elsewhere (the CLI);
    False: nothing."""
    stream = stream if stream is not None else sys.stderr
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):
        tty = False
    if enabled is False:
        return "off"
    if tty:
        return "rich"
    return "plain" if enabled else "off"


__all__ = ["HEARTBEAT_S", "PlanProgress", "choose_mode", "cost_weight", "format_seconds"]
