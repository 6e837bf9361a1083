package cli

// This file is owned by the lake sink: `iotpipe sink lake`.

var runSinkLake = notYet("sink lake")
