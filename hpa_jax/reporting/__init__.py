"""What a run leaves for people: files written whole and submissions (`outputs`), `report.md` and
its figures (`report`), training curves (`plots`), TensorBoard events (`summaries`), and the
sections of docs/performance.md the benchmarks write (`performance`)."""
