// Package demo holds the pure parts of `iotpipe demo`: it parses the
// Prometheus text exposition of the stages' /metrics and turns two
// scrapes into the live progress lines the demo prints (rates per stage,
// lag, windows emitted, dead letters by reason). It reads nothing from
// the network or the environment itself.
package demo
