-- Devices seen in the last week that have sent nothing for 10 minutes,
-- longest silent first. device_activity is written when a window closes,
-- so a device counts as silent only after its last window closed (window
-- length + allowed lateness after its last message).
SELECT device_id,
       max(last_seen)         AS last_seen,
       now() - max(last_seen) AS silent_for
FROM iotpipe.device_activity
WHERE bucket > now() - INTERVAL '7 days'
GROUP BY device_id
HAVING max(last_seen) < now() - INTERVAL '10 minutes'
ORDER BY last_seen;
