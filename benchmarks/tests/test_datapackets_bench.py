"""benchmarks/datapackets.py at a tiny scale: every packet is delivered; no timing checked."""

from benchmarks import datapackets


async def test_data_packets_benchmark_delivers_everything():
    served = await datapackets.through_server(receivers=2, count=20, size=50)
    assert served["delivered"] == 40 and served["cpu_us"] > 0
    base = await datapackets.direct(count=20, size=50)
    assert base["delivered"] == 20
