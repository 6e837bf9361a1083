package timescale

import (
	"embed"
	"fmt"
	"strings"
)

//go:embed queries/*.sql
var queryFiles embed.FS

// Example queries a data team runs against the sink's tables, as SQL text
// written for the default schema "iotpipe" (see queries/*.sql). They run
// unchanged on TimescaleDB and plain PostgreSQL.
const (
	// QueryLatestValue: latest value of one metric ($1) per device.
	QueryLatestValue = "latest_value_per_device.sql"
	// QueryHourlyStats: hourly stats of one device ($1) over the last week.
	QueryHourlyStats = "hourly_stats_for_device.sql"
	// QuerySilentDevices: devices silent for 10 minutes.
	QuerySilentDevices = "silent_devices.sql"
)

// Query returns the SQL of an example query (one of the Query* names),
// with the schema "iotpipe" replaced by schema when it is not empty.
func Query(name, schema string) (string, error) {
	if schema != "" && !validIdent(schema) {
		return "", fmt.Errorf("schema %q is not a lower-case SQL identifier", schema)
	}
	b, err := queryFiles.ReadFile("queries/" + name)
	if err != nil {
		return "", err
	}
	q := string(b)
	if schema != "" && schema != "iotpipe" {
		q = strings.ReplaceAll(q, "iotpipe.", schema+".")
	}
	return q, nil
}
