-- Version 0006 is reserved for the devices registry (another branch). This
-- placeholder changes nothing; when that branch's 0006 is merged, delete this
-- file (the catalog refuses two names for one version, so the merge cannot
-- keep both by accident).
SELECT 1;
