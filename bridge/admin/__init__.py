"""The admin page: server-rendered views of the journal, people, dead letters, runs and training."""
