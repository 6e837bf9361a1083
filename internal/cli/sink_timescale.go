package cli

// This file is owned by the TimescaleDB sink: `iotpipe sink timescale`.

var runSinkTimescale = notYet("sink timescale")
