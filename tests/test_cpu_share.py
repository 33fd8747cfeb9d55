"""Answers first on a shared CPU (issue 12): the load meter sees other processes and not our own
threads, generation drops to the cores other work leaves free, and indexing waits for answers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import wait_until
from vault_agent.cpu.load import OtherLoad, _machine_busy_ticks, usable_cores
from vault_agent.cpu.share import CpuShare

SPIN = "import time\nprint('spinning', flush=True)\nend = time.time() + 30\nwhile time.time() < end: pass\n"


def spinners(n: int) -> list[subprocess.Popen]:
    """n processes spinning a core each, returned once every one has started spinning."""
    procs = [subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE, text=True) for _ in range(n)]
    for p in procs:
        assert p.stdout.readline().strip() == "spinning"
    return procs


def stop(procs) -> None:
    for p in procs:
        p.kill()
        p.wait()


def measure(load: OtherLoad, seconds: float = 1.0) -> float:
    load.update()
    time.sleep(seconds)
    return load.update()


def test_a_busy_process_beside_us_counts_as_other_load():
    load = OtherLoad()
    procs = spinners(1)
    try:
        busy = measure(load)
    finally:
        stop(procs)
    assert busy >= 0.8  # one process spinning one core (anything else running only adds)


def test_our_own_busy_threads_are_not_other_load():
    """Our own spinning OpenMP threads must not make us think the machine is busy: what the
    meter reports is the machine's busy time less ours."""
    done, spinning = threading.Event(), threading.Event()

    def spin():
        spinning.set()
        while not done.is_set():
            pass

    load = OtherLoad()
    t = threading.Thread(target=spin)
    t.start()
    try:
        assert spinning.wait(10)
        load.update()
        m0, p0, t0 = _machine_busy_ticks(), time.process_time(), time.monotonic()
        time.sleep(1.0)  # the measuring interval
        other = load.update()
        elapsed = time.monotonic() - t0
        machine = (_machine_busy_ticks() - m0) / os.sysconf("SC_CLK_TCK") / elapsed
        own = (time.process_time() - p0) / elapsed
    finally:
        done.set()
        t.join()
    assert own >= 0.2  # the thread really ran (about a core on a quiet machine, less on a busy one)
    assert other <= machine - own / 2  # and it is not in "other" (machine time less ours, give or take)


def test_decode_threads_follow_the_free_cores():
    class Fixed(OtherLoad):  # the meter's reading pinned, to check the rule itself
        def __init__(self, value):
            super().__init__()
            self._busy = value

        def start(self):
            return self

    assert CpuShare(load=Fixed(0.0), cores=2).decode_threads(2) == 2
    assert CpuShare(load=Fixed(0.3), cores=2).decode_threads(2) == 2
    assert CpuShare(load=Fixed(1.0), cores=2).decode_threads(2) == 1
    assert CpuShare(load=Fixed(1.9), cores=2).decode_threads(2) == 1  # never below one
    assert CpuShare(load=Fixed(2.0), cores=8).decode_threads(8) == 6
    assert CpuShare(load=Fixed(0.0), cores=8).decode_threads(4) == 4  # never above the configured count
    assert CpuShare(load=Fixed(1.5), cores=2, follow_load=False).decode_threads(2) == 2
    share = CpuShare(load=Fixed(0.0), cores=2)
    with share.embedding(threads=1):  # our own embedder holds a core while a batch is in flight
        assert share.decode_threads(2) == 1
    assert share.decode_threads(2) == 2


def test_an_embedding_batch_waits_for_the_answer_being_generated():
    share = CpuShare(follow_load=False)
    order, waiting = [], threading.Event()

    def still_wanted() -> bool:  # asked by the batch while it waits for the answer
        waiting.set()
        return False

    with share.answering():
        t = threading.Thread(target=lambda: (share.embedding(should_stop=still_wanted).__enter__(),
                                             order.append("embed")))
        t.start()
        assert waiting.wait(10)  # the batch is held: it asks whether to stop while it waits
        order.append("answer done")
    t.join(timeout=5)
    assert order == ["answer done", "embed"]
    assert share.paused_s > 0


def test_indexing_is_never_starved_and_shutdown_does_not_wait():
    share = CpuShare(follow_load=False, max_pause_s=0.3)
    with share.answering():
        t0 = time.monotonic()
        with share.embedding():
            waited = time.monotonic() - t0
        t0 = time.monotonic()
        with CpuShare(follow_load=False).embedding(should_stop=lambda: True):
            stopped = time.monotonic() - t0
    assert 0.25 <= waited < 2
    assert stopped < 0.2
    with CpuShare(follow_load=False, yield_to_answers=False).embedding():
        pass  # no answer running: no wait at all


def test_an_unbroken_stream_of_answers_pauses_indexing_once_not_per_note():
    """The allowance is for the whole stream: after max_pause_s of answers back to back, the
    indexer reads and embeds beside them (no fresh pause per note) until the stream breaks."""
    share = CpuShare(follow_load=False, max_pause_s=0.3)
    with share.answering():
        t0 = time.monotonic()
        share.wait_for_answers()  # the first note of a sync waits out the allowance
        first = time.monotonic() - t0
        t0 = time.monotonic()
        for _ in range(5):  # the next notes do not wait again
            share.wait_for_answers()
        rest = time.monotonic() - t0
    share.wait_for_answers()  # no answer: the stream is over, the allowance is whole again
    with share.answering():
        t0 = time.monotonic()
        share.wait_for_answers()
        again = time.monotonic() - t0
    assert 0.25 <= first < 2 and rest < 0.1 and 0.25 <= again < 2


@pytest.mark.slow
def test_generation_uses_one_thread_beside_a_busy_process_and_all_when_idle(llm_backend):
    """The real model: two busy processes on the machine -> decode on one thread; the answer is
    the same text either way (greedy-ish sampling with a fixed seed), and the configured thread
    count is restored afterwards."""
    if usable_cores() < 2 or llm_backend.threads < 2:
        pytest.skip("needs 2+ cores: with one thread there is nothing to drop")
    messages = [{"role": "user", "content": "Name three colours."}]
    share = CpuShare()
    llm_backend.cpu_share = share
    procs = spinners(usable_cores())
    try:
        wait_until(lambda: share.decode_threads(llm_backend.threads) == 1, timeout=10,
                   what="the load meter to see the spinners")
        busy_answer = "".join(llm_backend.stream_chat(messages, max_tokens=24, seed=1))
        busy_threads = list(llm_backend.threads_used)
    finally:
        stop(procs)
        llm_backend.cpu_share = None
        share.close()
    assert busy_threads[0] == 1
    assert llm_backend.llm.context_params.n_threads == llm_backend.threads
    plain_answer = "".join(llm_backend.stream_chat(messages, max_tokens=24, seed=1))
    assert llm_backend.threads_used == [llm_backend.threads]  # no share: the configured count
    assert busy_answer.strip() and plain_answer.strip()


@pytest.mark.slow
def test_the_indexer_embeds_after_the_answer_not_during_it(llm_backend, real_embedder):
    """Real model and real embedder sharing one CpuShare, as the daemon wires them: an embedding
    requested while an answer streams starts only after the last token."""
    requested = threading.Event()

    class Share(CpuShare):  # notes when the embedder asks for its turn
        def embedding(self, *args, **kwargs):
            requested.set()
            return super().embedding(*args, **kwargs)

    share = Share(follow_load=False)
    embedder = real_embedder
    llm_backend.cpu_share, embedder.cpu_share = share, share
    events = []
    try:
        stream = llm_backend.stream_chat([{"role": "user", "content": "Count from one to ten."}], max_tokens=24)
        events.append(("first token", time.monotonic(), next(stream)))
        t = threading.Thread(target=lambda: (embedder.embed(["a note about compost"]),
                                             events.append(("embedded", time.monotonic(), None))))
        t.start()
        assert requested.wait(120)  # the batch asks for its turn while the answer is still open
        for piece in stream:
            pass
        events.append(("last token", time.monotonic(), piece))
        t.join(timeout=30)
    finally:
        llm_backend.cpu_share, embedder.cpu_share = None, None
        share.close()
    names = [e[0] for e in events]
    assert names == ["first token", "last token", "embedded"]
