package cli

// This file is owned by the processor stage: it defines the
// `iotpipe processor` command (flags → processor.Config → New → Run).

const processorSummary = "compute per-device windowed metrics, exactly once (not available yet)"

var runProcessor = notYet("processor")
