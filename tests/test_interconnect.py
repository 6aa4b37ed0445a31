"""`runtime.interconnect`: collectives read from HLO text (CPU's synchronous ops and GPU's
asynchronous `-start` pairs, listed and iota replica groups, loops of a known trip count), the
bytes a ring algorithm moves for each, and their time over a node's link or the network."""

import pytest

from hpa_jax.runtime import interconnect

# A GPU-style module: a while loop run 4 times whose body holds an async all-gather of a
# (2, 6) float32 result over 8 devices; an all-reduce of a bf16 (1000,) and a f32 scalar
# over groups of 4 (iota form) in the entry; a reduce-scatter; a permute.
HLO = """HloModule step, entry_computation_layout={()->()}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  ROOT %s = f32[] add(%a, %b)
}

%body.1 (p: (s32[], f32[8,2,6])) -> (s32[], f32[8,2,6]) {
  %ag-start = (f32[1,2,6]{2,1,0}, f32[8,2,6]{2,1,0}) all-gather-start(%x), channel_id=1, replica_groups={{0,1,2,3,4,5,6,7}}, dimensions={0}
  %ag-done = f32[8,2,6]{2,1,0} all-gather-done(%ag-start)
  ROOT %t = (s32[], f32[8,2,6]) tuple(%i, %ag-done)
}

%cond.1 (p: (s32[], f32[8,2,6])) -> pred[] {
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

ENTRY %main.9 (x: f32[1,2,6]) -> f32[] {
  %w = (s32[], f32[8,2,6]) while(%init), condition=%cond.1, body=%body.1, backend_config={"known_trip_count":{"n":"4"}}
  %ar = (bf16[1000]{0}, f32[]) all-reduce(%g, %l), channel_id=2, replica_groups=[2,4]<=[8], to_apply=%add
  %rs = f32[100]{0} reduce-scatter(%h), channel_id=3, replica_groups={}, dimensions={0}, to_apply=%add
  %cp = f32[10]{0} collective-permute(%k), channel_id=4, source_target_pairs={{0,1},{1,2}}
  ROOT %r = f32[] constant(0)
}
"""


def test_collectives_their_groups_repeats_and_ring_bytes():
    found = interconnect.collectives(HLO, num_devices=8)
    kinds = [c.kind for c in found]
    assert kinds.count("all-gather") == 4   # once per loop trip; its -done half not counted
    gather = next(c for c in found if c.kind == "all-gather")
    assert (gather.result_bytes, gather.group) == (8 * 2 * 6 * 4, 8)   # the result, not the operand
    assert gather.bytes_sent == pytest.approx(7 / 8 * 384)
    reduce = next(c for c in found if c.kind == "all-reduce")
    assert (reduce.result_bytes, reduce.group) == (1000 * 2 + 4, 4)
    assert reduce.bytes_sent == pytest.approx(2 * 3 / 4 * 2004)
    scatter = next(c for c in found if c.kind == "reduce-scatter")
    assert (scatter.group, scatter.bytes_sent) == (8, 7 * 400)        # empty groups: every device
    permute = next(c for c in found if c.kind == "collective-permute")
    assert permute.bytes_sent == 40

    total = interconnect.summary(found)
    assert total["count"] == 7 and total["kinds"]["all-gather"]["count"] == 4
    assert total["bytes_sent"] == pytest.approx(4 * 336 + 3006 + 2800 + 40)


def test_link_time_over_the_node_or_the_network():
    links = dict(devices_per_node=8, node_link_gb_s=400.0, network_gb_s=50.0, latency_us=10.0)
    within = interconnect.link_seconds(4e9, 100, 8, **links)
    across = interconnect.link_seconds(4e9, 100, 16, **links)
    assert within == {"link": "node", "gb_s": 400.0, "seconds": pytest.approx(0.01 + 0.001)}
    assert across == {"link": "network", "gb_s": 50.0, "seconds": pytest.approx(0.08 + 0.001)}
