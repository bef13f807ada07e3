"""The path every packet takes in the software backend: demuxer -> decoder -> decode run.

:class:`Pipeline` owns the three parts of one open stream and the only place where a container
is opened (:meth:`Pipeline.reopen`), so the decoder's threading is always the one the stream's
state calls for (:attr:`~phast.backends.damage.StreamState.frame_threads`): a state that changes
(damage found, an index phase begins or ends) takes effect at the next positioning, which
reopens whenever the open decoder's threading differs -- nothing reopens as a side effect.

Positioning (:meth:`Pipeline.position`) puts the demuxer at a start packet with a flushed
decoder and begins a :class:`~phast.backends.decoderun.DecodeRun` there; :meth:`Pipeline.feed`
decodes packet after packet, reading the decoder's errors (exceptions, FFmpeg's messages) into
the run, which checks and holds the frames, and feeding the run's second decoder if it has one
(:mod:`.recheck`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from phast.index import FrameIndex

from .avframes import av
from .damage import PrefixCheck, StreamState, discard_log, logged_errors
from .decoder import AvDecoder
from .decoderun import BadStart, DecodeRun, KeptFrames
from .demux import Demuxer
from .recheck import Recheck

#: (decode position, frames that came out) per packet fed; position None: the final flush
Fed = Iterator[tuple[int | None, list[Any]]]


class Pipeline:
    """One stream's demuxer, decoder and current decode run (see the module docstring)."""

    def __init__(self, demux: Demuxer, decoder: AvDecoder, state: StreamState,
                 kept: KeptFrames, progress: Callable[[], None]) -> None:
        self.demux, self.decoder, self.state, self.kept = demux, decoder, state, kept
        self.progress = progress
        self.index: FrameIndex | None = None
        self.run: DecodeRun | None = None
        #: frames two differently held decodes gave the same picture (see backends.recheck)
        self.stable = np.zeros(0, bool)
        #: a second decoder follows positioned runs until every frame is stable (the backend
        #: sets it: codecs in recheck.RECHECK_CODECS, FFmpeg's decoder, not turned off)
        self.rechecks = False
        self.avoid: dict[int, int] = {}  # frame -> a start packet it must decode from before
        self.reopen()

    def end_run(self) -> None:
        """No decode run goes on (the next request positions anew); its second decoder closes."""
        if self.run is not None:
            self.run.close()
            self.run = None

    def reopen(self) -> None:
        """Open the container from byte 0, its decoder with the threading the state calls for.
        No decode run survives it."""
        self.demux.open(**self.decoder.open_options())
        self.decoder.attach(self.demux.stream, frame_threads=self.state.frame_threads)
        discard_log()  # about the closed decoder's runs
        self.end_run()

    def use_index(self, index: FrameIndex) -> None:
        """Position by ``index`` from now on (no run, no kept frame survives it)."""
        if index.damaged and not self.state.damaged:
            self.state.found("index", "the stored index marks the stream damaged",
                             frame_threads=self.decoder.frame_threads)
        self.index = index
        self.demux.use_index(index)
        self.stable = np.zeros(index.frame_count, bool)
        self.avoid.clear()
        self.kept.drop()
        self.end_run()

    # -- positioning ------------------------------------------------------------------------
    def position(self, start: int, prefix: PrefixCheck | None = None) -> DecodeRun:
        """Begin a decode run at packet ``start`` of the index, with a flushed decoder."""
        index = self.index
        assert index is not None
        self.end_run()
        if start == 0 or not self.demux.can_seek:
            self._rewind()
        else:
            if self.state.damaged or self.decoder.frame_threads != self.state.frame_threads:
                # Damaged: a fresh decoder, since a flushed one keeps what it parsed before
                # (HEVC parameter sets), so its pictures from here would depend on which
                # requests came before; fresh, they are the ones the index checked. Otherwise
                # the state's threading changed since the decoder opened.
                self.reopen()
            if not self.demux.seek(start, index):
                self._rewind()
        self.decoder.flush()
        self.demux.skip_to(start)
        self.run = self._new_run(index, start, prefix)
        return self.run

    def index_pass(self) -> DecodeRun:
        """Begin a decode run from packet 0 without an index (the index is being built)."""
        self.index = None
        self.end_run()
        self._rewind()
        self.run = self._new_run(None, None)
        return self.run

    def fresh(self) -> None:
        """A container nothing has been read from yet (the index pass demuxes from byte 0)."""
        if not self.demux.fresh:
            self.reopen()

    def _rewind(self) -> None:
        self.reopen()
        self.demux.start()

    def _new_run(self, index: FrameIndex | None, start: int | None,
                 prefix: PrefixCheck | None = None) -> DecodeRun:
        # A second decoder follows a positioned run while the codec needs one and some frame is
        # not stable yet; never the index's own decodes nor the prefix's (they compare already).
        recheck = None
        if (self.rechecks and start is not None and prefix is None
                and self.state.health == "valid" and not self.stable.all()):
            recheck = Recheck(self.decoder.cc)
        return DecodeRun(index, start, self.state, self.kept, self.avoid,
                         frame_threads=self.decoder.frame_threads, lag=self.decoder.lag,
                         stable=self.stable, prefix=prefix, recheck=recheck)

    def reaches(self, i: int, start: int) -> bool:
        """Can the current decode run reach frame ``i`` (start packet ``start``) by going on?

        On a damaged stream only a run from the very start or from the frame's own start packet
        qualifies: those are the decodes the index checked (``IndexBuilder.unstable_packets``);
        a run from an earlier keyframe carries decoder state over the damage that no decode
        compared.
        """
        run = self.run
        if run is None or run.start is None:
            return False
        if i in run.pending:
            return True  # out of this run already, waiting for earlier packets (run.hold)
        if run.eof or not run.start <= start <= self.demux.next_pos or i < run.expected:
            return False
        return not self.state.damaged or run.start in (0, start)

    def position_now(self) -> tuple[int, int] | None:
        """(start packet of the current run, next packet), or None (no run, or at its end)."""
        run = self.run
        if run is None or run.start is None or run.eof:
            return None
        return run.start, self.demux.next_pos

    # -- decoding ---------------------------------------------------------------------------
    def run_to(self, target: int) -> Any:
        """Go on decoding until frame ``target`` may be served (:meth:`DecodeRun.until`).

        A run that disagrees with the index, or whose decoder failed, is over: the next request
        positions anew (a hardware decoder that failed is then replaced). A frame that is not
        decodable from this start (:class:`BadStart`) ends nothing: the caller decodes it from
        an earlier one."""
        run = self.run
        assert run is not None
        try:
            return run.until(target, self.feed())
        except BadStart:
            raise
        except BaseException:
            self.end_run()
            raise

    def feed(self) -> Fed:
        """Feed every remaining packet to the decoder, then flush it; errors go to the run."""
        run = self.run
        assert run is not None
        while True:
            self.progress()
            item = self.demux.read()
            if item is None:
                yield None, self._flush(run)
                return
            pos, pkt = item
            run.fed(pos)
            skip = pos < run.skip_until
            self.decoder.skip_nonref(skip)
            try:
                frames, logged = self._decode(run, pkt, skip)
            except av.FFmpegError as e:
                run.failed(pos, str(e))
                frames = []  # as a sequential decode does: skip the packet, go on
            else:
                if logged:  # concealed: the frames come out, but the decoder saw damage
                    run.logged(pos, logged)
            yield pos, frames

    def _flush(self, run: DecodeRun) -> list[Any]:
        """The frames still in the decoder at the end of the stream, messages read: frame
        threads finish the last packets during the flush, and log their damage then."""
        frames: list[Any] = []
        logged: list[str] = []
        with contextlib.suppress(av.FFmpegError):
            frames, logged = self._decode(run, None, False)
        if logged:
            run.logged(self.demux.next_pos - 1, logged)  # about one of the last packets
        return frames

    def _decode(self, run: DecodeRun, packet: Any, skip: bool) -> tuple[list[Any], list[str]]:
        """The decoder's frames for ``packet`` and the damage it logged meanwhile (read where
        messages are reliable: ``AvDecoder.reads_log``); the run's second decoder gets the
        packet too."""
        if not self.decoder.reads_log:
            frames = self.decoder.decode(packet)
            run.recheck_feed(packet, skip)
            return frames, []
        with logged_errors() as logged:
            frames = self.decoder.decode(packet)
            run.recheck_feed(packet, skip)
        return frames, logged

    def close(self) -> None:
        self.end_run()
        self.kept.drop()
        self.decoder.close()
        self.demux.close()


__all__ = ["Fed", "Pipeline"]
