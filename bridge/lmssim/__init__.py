"""A small LMS simulator (Moodle web services + Canvas REST subsets) that behaves like the real
LMS per LMS.md — for the demo, the tests and the benches."""
