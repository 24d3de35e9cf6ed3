"""Reviews (SVS): findings about a run, from contracts, statistics, reviewers and the monitor."""
