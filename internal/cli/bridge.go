package cli

// This file is owned by the bridge stage: it defines the `iotpipe bridge`
// command (flags → bridge.Config → bridge.New → Run).

const bridgeSummary = "move device readings from MQTT to Kafka (not available yet)"

var runBridge = notYet("bridge")
