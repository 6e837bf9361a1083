package schemas

import (
	"embed"
	"io/fs"
)

//go:embed jsonschema/*.schema.json
var jsonSchemaFS embed.FS

// JSON Schema (draft 2020-12) file names, as found in JSONSchemas.
const (
	SchemaFileDevicePayload = "device-payload.schema.json"
	SchemaFileRaw           = "telemetry-raw.v1.schema.json"
	SchemaFileMetrics       = "telemetry-metrics.v1.schema.json"
	SchemaFileDLQ           = "telemetry-dlq.v1.schema.json"
)

// JSONSchemas returns the JSON Schema (draft 2020-12) documents of the wire
// formats, by file name (the SchemaFile* constants): the device payload, and
// the telemetry.raw, telemetry.metrics and telemetry.dlq v1 records (the
// latter as the JSON view written by DeadLetter.MarshalJSON). The schemas
// describe the formats for other tools; the Go decoders are the reference and
// also check what JSON Schema cannot (timestamp skew, byte lengths,
// duplicate names).
func JSONSchemas() fs.FS {
	sub, err := fs.Sub(jsonSchemaFS, "jsonschema")
	if err != nil {
		panic(err) // unreachable: the directory is embedded
	}
	return sub
}

// JSONSchema returns the contents of one schema file by name, and false when
// there is no such file.
func JSONSchema(name string) ([]byte, bool) {
	b, err := fs.ReadFile(JSONSchemas(), name)
	if err != nil {
		return nil, false
	}
	return b, true
}
