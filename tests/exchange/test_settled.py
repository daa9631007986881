"""`ReplyWaiter` and `Call`: the auction's wait for its DSP calls (every one done, or the
deadline), each call reporting by a callback instead of a future."""

import asyncio

import pytest

from openbid.exchange.fanout import ReplyWaiter
from openbid.http.client import Call, UpstreamError, UpstreamResponse


def _reply(tag: str) -> UpstreamResponse:
    return UpstreamResponse(200, [], tag.encode(), 0.0)


def _calls(settle: ReplyWaiter, n: int) -> list[Call]:
    settle.pending += n
    return [Call(settle.one_done) for _ in range(n)]


def test_returns_when_the_last_call_settles():
    async def main():
        loop = asyncio.get_running_loop()
        settle = ReplyWaiter()
        calls = _calls(settle, 3)
        loop.call_later(0.01, calls[0].set_result, _reply("a"))
        loop.call_later(0.02, calls[1].set_exception, UpstreamError("reset", "gone"))
        loop.call_later(0.03, calls[2].set_result, _reply("c"))
        started = loop.time()
        await settle.wait(loop, loop.time() + 5.0)
        outcomes = [c.response.body if c.response else c.error.kind for c in calls]
        return outcomes, loop.time() - started, settle.pending

    outcomes, waited, pending = asyncio.run(main())
    assert outcomes == [b"a", "reset", b"c"]
    assert waited < 4.0  # woken by the last reply, not by the deadline
    assert pending == 0


def test_the_deadline_ends_the_wait_and_a_late_reply_changes_nothing():
    async def main():
        loop = asyncio.get_running_loop()
        settle = ReplyWaiter()
        done, never = _calls(settle, 2)
        loop.call_soon(done.set_result, _reply("reply"))
        await settle.wait(loop, loop.time() + 0.05)
        state = (done.done(), never.done(), settle.pending)
        loop.call_soon(never.set_result, _reply("late"))  # the reply after the wait ended
        await asyncio.sleep(0.01)
        return state, never.response.body, settle.pending

    assert asyncio.run(main()) == ((True, False, 1), b"late", 0)


def test_nothing_pending_needs_no_wait():
    async def main():
        loop = asyncio.get_running_loop()
        settle = ReplyWaiter()
        call = _calls(settle, 1)[0]
        call.set_result(_reply("x"))
        await settle.wait(loop, loop.time() - 1.0)  # past deadline, nothing pending
        return settle.pending

    assert asyncio.run(main()) == 0


def test_a_call_settles_once():
    seen = []
    call = Call(seen.append)
    call.set_result(_reply("first"))
    with pytest.raises(asyncio.InvalidStateError):
        call.set_exception(UpstreamError("timeout", "too late"))
    with pytest.raises(asyncio.InvalidStateError):
        call.set_result(_reply("second"))
    assert seen == [call] and call.response.body == b"first" and call.error is None
