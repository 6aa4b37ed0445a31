"""The collectives of a compiled program, the bytes each device moves for them, and the time
those bytes take over the links between devices.

Read from XLA's optimised HLO (`compiled.as_text()`): every all-reduce, all-gather,
reduce-scatter, all-to-all and collective-permute (or its asynchronous `-start` half, as on GPUs)
with its result's shape and its replica group's size. Bytes are what one device sends (and
receives, the same) under the ring algorithms NCCL uses for large messages: an all-reduce of S
bytes over G devices moves 2 (G - 1) / G x S, an all-gather or all-to-all of a result of S bytes
(G - 1) / G x S, a reduce-scatter (G - 1) x S, a permute S. The time of a step's collectives is
their bytes over the slowest link the ring crosses (NVLink within a node; the network as soon as
the group spans nodes) plus a fixed latency each, with no overlap with compute assumed: an upper
bound on what they add to a step.
"""

import dataclasses
import math
import re

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_OP = re.compile(r"=\s*(?P<type>\(.*?\)|\S+)\s+(?P<op>" + "|".join(KINDS) + r")(?P<start>-start)?\(")
_SHAPE = re.compile(r"\b(?P<dtype>pred|[subf]\d+|bf16|f8e\w+)\[(?P<dims>[\d,]*)\]")
_GROUPS_LIST = re.compile(r"replica_groups=\{\{(?P<first>[\d,]*)\}")
_GROUPS_IOTA = re.compile(r"replica_groups=\[(?P<groups>\d+),(?P<size>\d+)\]")
_BITS = {"pred": 8, "bf16": 16}


def _shape_bytes(dtype: str, dims: str) -> int:
    bits = _BITS.get(dtype) or int(re.sub(r"\D", "", dtype.split("e")[0]) or 8)
    return math.prod(int(d) for d in dims.split(",") if d) * bits // 8


@dataclasses.dataclass(frozen=True)
class Collective:
    kind: str          # one of KINDS
    result_bytes: int  # of the result on one device
    group: int         # devices taking part together

    @property
    def bytes_sent(self) -> float:
        """What one device sends (and receives) for it under a ring algorithm."""
        g, s = self.group, self.result_bytes
        if g <= 1:
            return 0.0
        return {"all-reduce": 2 * (g - 1) / g * s, "all-gather": (g - 1) / g * s, "all-to-all": (g - 1) / g * s,
                "reduce-scatter": (g - 1) * s, "collective-permute": s}[self.kind]


_CALLEE = re.compile(r"\b(?:body|calls|true_computation|false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIPS = re.compile(r'"known_trip_count":\{"n":"(\d+)"')


def _computations(hlo_text: str) -> tuple[dict[str, list[str]], str | None]:
    """{computation name: its lines} and the entry computation's name."""
    blocks, entry, current = {}, None, None
    for line in hlo_text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            words = line.split()
            is_entry = words[0] == "ENTRY"
            current = words[1 if is_entry else 0].lstrip("%")
            blocks[current] = []
            entry = current if is_entry else entry
        elif current is not None:
            blocks[current].append(line)
    return blocks, entry


def _runs_per_step(blocks: dict[str, list[str]], entry: str | None) -> dict[str, int]:
    """How many times each computation runs per call of the entry: a while loop's body (a `scan`,
    gradient accumulation's micro-batches) as often as XLA's known trip count says."""
    if entry is None:
        return {name: 1 for name in blocks}
    runs, order = {entry: 1}, [entry]
    for name in order:                       # callers before callees: HLO has no recursion
        for line in blocks.get(name, ()):
            callees = _CALLEE.findall(line)
            for branches in _BRANCHES.findall(line):
                callees += [b.strip().lstrip("%") for b in branches.split(",") if b.strip()]
            trips = _TRIPS.search(line)
            for callee in callees:
                times = runs[name] * (int(trips[1]) if trips and " while(" in line else 1)
                if callee not in runs:
                    order.append(callee)
                runs[callee] = runs.get(callee, 0) + times
    return runs


def collectives(hlo_text: str, num_devices: int) -> list[Collective]:
    """Each collective an optimised HLO module runs per call, as often as it runs (an asynchronous
    pair counts as one; one inside a loop of N known trips, N times)."""
    blocks, entry = _computations(hlo_text)
    runs = _runs_per_step(blocks, entry)
    found = []
    for name, lines in blocks.items():
        for line in lines:
            collective = _parse(line, num_devices)
            if collective is not None:
                found += [collective] * runs.get(name, 0)
    return found


def _parse(line: str, num_devices: int) -> Collective | None:
    """The collective an HLO instruction line starts, or None."""
    match = _OP.search(line)
    if not match:
        return None
    shapes = [_shape_bytes(m["dtype"], m["dims"]) for m in _SHAPE.finditer(match["type"])]
    if match["start"] and match["op"] in ("all-gather", "collective-permute", "all-to-all") and len(shapes) > 1:
        shapes = shapes[len(shapes) // 2:]   # a -start's type is (operands, results)
    iota, listed = _GROUPS_IOTA.search(line), _GROUPS_LIST.search(line)
    if match["op"] == "collective-permute":
        group = 2
    elif iota:
        group = int(iota["size"])
    elif listed and listed["first"]:
        group = len(listed["first"].split(","))
    else:
        group = num_devices   # replica_groups={} is every device
    return Collective(match["op"], sum(shapes), group)


def summary(found: list[Collective]) -> dict:
    """{kind: {"count", "bytes_sent"}} for the kinds present, and the totals."""
    kinds = {}
    for c in found:
        entry = kinds.setdefault(c.kind, {"count": 0, "bytes_sent": 0.0})
        entry["count"] += 1
        entry["bytes_sent"] += c.bytes_sent
    return {"kinds": kinds, "count": len(found), "bytes_sent": sum(c.bytes_sent for c in found)}


def link_seconds(bytes_sent: float, count: int, num_devices: int, *, devices_per_node: int,
                 node_link_gb_s: float, network_gb_s: float, latency_us: float) -> dict:
    """The time `count` collectives moving `bytes_sent` per device take on `num_devices` devices:
    over the node's link when they fit one node, the network when they span nodes."""
    spans_nodes = num_devices > devices_per_node
    bandwidth = (network_gb_s if spans_nodes else node_link_gb_s) * 1e9
    return {"link": "network" if spans_nodes else "node", "gb_s": bandwidth / 1e9,
            "seconds": bytes_sent / bandwidth + count * latency_us * 1e-6}
