-- Placeholder on branch "alerts" only: versions 0009-0014 belong to the
-- device-API branch. Delete this file when merging that branch (and
-- regenerate testdata/checksums.golden).
SELECT 1;
