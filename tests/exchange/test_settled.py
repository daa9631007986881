"""`_settled`: the auction's wait for its DSP calls (every one done, or the deadline)."""

import asyncio

from openbid.exchange.orchestrator import _settled


def test_returns_when_the_last_future_is_done():
    async def main():
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(3)]
        for i, future in enumerate(futures):
            loop.call_later(0.01 * (i + 1), future.set_result, i)
        started = loop.time()
        await _settled(loop, futures, loop.time() + 5.0)
        return [f.result() for f in futures], loop.time() - started

    results, waited = asyncio.run(main())
    assert results == [0, 1, 2]
    assert waited < 4.0  # woken by the last reply, not by the deadline


def test_the_deadline_ends_the_wait_and_unhooks_the_futures_still_out():
    async def main():
        loop = asyncio.get_running_loop()
        done, never = loop.create_future(), loop.create_future()
        loop.call_soon(done.set_result, "reply")
        await _settled(loop, [done, never], loop.time() + 0.05)
        state = (done.done(), never.done())
        never.set_result("late")  # a late reply must not touch the finished wait
        await asyncio.sleep(0)
        return state, never._callbacks

    state, callbacks = asyncio.run(main())
    assert state == (True, False)
    assert not callbacks


def test_futures_already_done_need_no_wait():
    async def main():
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        future.set_result(1)
        await _settled(loop, [future], loop.time() - 1.0)  # past deadline, nothing pending
        return True

    assert asyncio.run(main())
