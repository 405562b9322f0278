"""In-process chunk loads: held chunks are looked up at once, the rest go to the threads."""

import threading

import pytest

from lakeio.loader.prefetch import ThreadLoads


def test_a_chunk_held_in_memory_is_loaded_by_the_caller_and_the_rest_on_threads():
    threads = {}

    def load(chunk):
        threads[chunk] = threading.current_thread().name
        if chunk == 13:
            raise OSError("chunk 13 is gone")
        return {"images": chunk}

    loads = ThreadLoads(load, threads=2, in_memory=lambda c: c % 2 == 1)
    try:
        held, read, failed = loads.start(3), loads.start(4), loads.start(13)
        assert held.done() and held.result() == {"images": 3}
        assert threads[3] == threading.current_thread().name
        assert read.result(timeout=10) == {"images": 4}
        assert threads[4].startswith("lakeio-load")
        with pytest.raises(OSError, match="chunk 13 is gone"):  # where the batch is taken
            failed.result()
    finally:
        loads.close()
