"""Results: the run folder (writing, reading, exporting) and its terminal summary."""
