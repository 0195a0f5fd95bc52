"""Reports a manager can trust (issue 14): segments derived from the call timeline,
metric definitions with their formulas in words, intervals in the centre's time zone.

Pure: :mod:`~cti.reports.segments`, :mod:`~cti.reports.definitions`,
:mod:`~cti.reports.intervals`, :mod:`~cti.reports.rows`. With I/O: :mod:`~cti.reports.store`
(its tables, migration 010) and :mod:`~cti.reports.service` (one report, for the CLI and
the API)."""
