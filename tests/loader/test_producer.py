"""The hand-over of batches: copy orders made once, by whichever thread takes them first, and
batch arrays written again only once nobody holds them."""

import threading
import time

import numpy as np
import pytest
import torch

from lakeio.loader.buffers import RecycledArrays
from lakeio.loader.producer import CopyOrder, Orders


def test_an_order_is_copied_once_however_many_threads_take_it():
    calls = []

    def gather(value):
        calls.append(threading.current_thread().name)
        time.sleep(0.05)  # long enough for the other takers to arrive meanwhile
        return {"images": np.full(3, value)}

    order = CopyOrder(gather, 7)
    results = []
    takers = [threading.Thread(target=lambda: results.append(order.take())) for _ in range(4)]
    for t in takers:
        t.start()
    for t in takers:
        t.join()
    assert len(calls) == 1 and order.done and order.taken
    assert len(results) == 4 and all(r is results[0] for r in results)
    np.testing.assert_array_equal(results[0]["images"], [7, 7, 7])


def test_a_failed_copy_is_raised_where_the_batch_is_taken():
    def gather():
        raise IndexError("row 9 of chunk 3")

    order = CopyOrder(gather)
    order.take_quietly()  # the batcher thread, ahead of the training loop: keeps the error
    assert order.done
    with pytest.raises(IndexError, match="row 9 of chunk 3"):
        order.take()


def test_cancel_claims_an_order_nobody_took_and_waits_for_one_being_copied():
    untouched = CopyOrder(lambda: pytest.fail("an abandoned batch must not be copied"))
    untouched.cancel()
    with pytest.raises(RuntimeError, match="abandoned"):
        untouched.take()

    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(5)
        return {"images": np.zeros(1)}

    busy = CopyOrder(slow)
    taker = threading.Thread(target=busy.take)
    taker.start()
    started.wait(5)
    threading.Timer(0.1, release.set).start()
    busy.cancel()  # returns only once the copy in progress is done
    assert busy.done and release.is_set()
    taker.join()


def test_orders_finish_in_batch_order_and_take_one_makes_the_newest_untaken():
    """The batcher thread copies from the far end: the oldest order is the training loop's
    next, and it copies that one itself rather than wait for one half made."""
    orders = Orders()
    made = []
    batch_orders = [CopyOrder(lambda i=i: made.append(i) or {"i": i}) for i in range(4)]
    for i, order in enumerate(batch_orders):
        orders.add(i, order)
    batch_orders[1].take()  # made out of turn: not finished before batch 0
    assert orders.finished() == []
    assert orders.take_one() and made == [1, 3]
    assert orders.take_one() and made == [1, 3, 2]
    assert orders.finished() == []  # batch 0 still not made
    assert batch_orders[0].take() == {"i": 0}  # (as the training loop does)
    assert orders.finished() == [0, 1, 2, 3]
    assert orders.finished(everything=False) == []
    assert not orders.take_one()
    orders.add(4, CopyOrder(lambda: made.append(4) or {"i": 4}))
    assert orders.take_one() and orders.finished(everything=True) == [4] and made[-1] == 4


def test_an_array_is_written_again_only_once_nobody_holds_it():
    pool = RecycledArrays(keep=3)
    a = pool.empty((4, 2), np.uint8)
    tensor = torch.from_numpy(a)  # what the loader hands out
    del a
    b = pool.empty((4, 2), np.uint8)
    assert not np.shares_memory(tensor.numpy(), b)  # the tensor holds the first one
    view = tensor[1:]  # a view of the tensor still holds it after the tensor goes
    del tensor
    c = pool.empty((4, 2), np.uint8)
    assert not np.shares_memory(view.numpy(), c) and not np.shares_memory(b, c)
    del view, b
    d = pool.empty((4, 2), np.uint8)  # now the first and second are let go of: reused
    assert pool.reused == 1
    e = pool.empty((4, 2), np.uint8)
    assert pool.reused == 2 and not np.shares_memory(d, e)
    assert not np.shares_memory(pool.empty((5, 2), np.uint8), d)  # another shape: fresh


def test_object_arrays_are_never_kept_and_the_pool_stays_bounded():
    pool = RecycledArrays(keep=2)
    held = [pool.empty((3,), np.int64) for _ in range(5)]  # all held: fresh arrays past keep
    assert len({id(h) for h in held}) == 5 and pool.reused == 0
    strings = pool.empty((3,), object)
    assert strings.dtype == object and sum(len(a) for a in pool._arrays.values()) == 2


def test_finishing_everything_makes_the_copies_nobody_took():
    """At an epoch's end (or before an error is queued) the batches still queued are made, so
    the training loop gets them, not an abandoned batch."""
    orders = Orders()
    batch_orders = [CopyOrder(lambda i=i: {"i": i}) for i in range(3)]
    for i, order in enumerate(batch_orders):
        orders.add(i, order)
    assert orders.finished(everything=True) == [0, 1, 2]
    assert [order.take()["i"] for order in batch_orders] == [0, 1, 2]
    orders.cancel()  # nothing left to cancel: the batches stay made
    assert batch_orders[2].take() == {"i": 2}
