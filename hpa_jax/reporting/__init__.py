"""What a run leaves for people: the run folder's files (`workdir`), files written whole
(`outputs`), `report.md` and figures (`report`, `plots`) and TensorBoard events (`summaries`)."""
