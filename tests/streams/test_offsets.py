from v2serve.streams.offsets import OffsetTracker


def test_the_commit_point_waits_for_the_oldest_unfinished_offset():
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.start("p0", offset)
    tracker.finish("p0", 12)
    tracker.finish("p0", 11)
    assert tracker.committable() == {"p0": 10}, "offset 10 is still in flight"
    tracker.finish("p0", 10)
    assert tracker.committable() == {"p0": 13}


def test_partitions_are_independent_and_only_moved_ones_are_committed_again():
    tracker = OffsetTracker()
    tracker.start("a", 0)
    tracker.start("b", 5)
    tracker.finish("b", 5)
    assert tracker.committable() == {"a": 0, "b": 6}
    tracker.mark_committed({"a": 0, "b": 6})
    assert tracker.committable() == {}
    tracker.finish("a", 0)
    assert tracker.committable() == {"a": 1}
    assert tracker.in_flight("a") == 0


def test_forgotten_partitions_are_not_committed():
    tracker = OffsetTracker()
    tracker.start("a", 3)
    tracker.forget(["a"])
    assert tracker.committable() == {}
    assert tracker.in_flight("a") == 0


def test_finishing_in_a_forgotten_partition_is_harmless():
    tracker = OffsetTracker()
    tracker.start("a", 1)
    tracker.forget(["a"])
    tracker.finish("a", 1)
    assert tracker.committable() == {}
