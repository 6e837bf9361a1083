package bridge

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
)

// The broker's own statistics the bridge follows. Mosquitto publishes its
// $SYS tree every sys_interval (10 s by default); other brokers may not
// publish these topics at all, and then the gauges stay at -1.
const (
	// sysDropped is the number of publish messages the broker dropped
	// because of its inflight or queue limits (max_queued_messages), over
	// all sessions, since it started. Mosquitto publishes it only once it is
	// not zero.
	sysDropped = "$SYS/broker/publish/messages/dropped"
	// sysStored is the number of messages the broker holds (queued for
	// offline or slow sessions, and retained).
	sysStored = "$SYS/broker/store/messages/count"
	// sysFilter covers both.
	sysFilter = "$SYS/broker/#"
)

// brokerStats turns the broker's $SYS messages into gauges, and logs an
// error whenever the broker's drop count grows: messages a device got a
// PUBACK for were lost before the bridge could take them.
type brokerStats struct {
	log     *slog.Logger
	dropped prometheus.Gauge
	stored  prometheus.Gauge

	mu       sync.Mutex
	lastDrop int64 // -1: not reported yet
}

func newBrokerStats(log *slog.Logger, reg prometheus.Registerer) *brokerStats {
	const ns, sub = "iotpipe", "bridge"
	s := &brokerStats{log: log, lastDrop: -1,
		dropped: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "broker_dropped_messages",
			Help: "Publish messages the MQTT broker dropped because of its inflight or queue limits (max_queued_messages), over all its sessions since it started, as it reports in " + sysDropped +
				". Mosquitto reports it once it is not 0: 0 until then while the broker answers, -1 when the broker publishes no such statistic. Any increase means messages that devices got a PUBACK for were lost."}),
		stored: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "broker_stored_messages",
			Help: "Messages the MQTT broker holds (queued for sessions, retained), as it reports in " + sysStored + "; -1 when not reported."}),
	}
	s.dropped.Set(-1)
	s.stored.Set(-1)
	if reg != nil {
		reg.MustRegister(s.dropped, s.stored)
	}
	return s
}

// isSys tells whether a message is one of the broker's statistics (an
// MQTT '#' filter never matches topics beginning with '$', so these
// arrive only through the $SYS subscription).
func isSys(topic string) bool { return strings.HasPrefix(topic, "$SYS/") }

// handle records one $SYS message; unknown topics and unparsable values are
// ignored (they are the broker's, not a device's).
func (s *brokerStats) handle(topic string, payload []byte) {
	v, err := strconv.ParseInt(strings.TrimSpace(string(payload)), 10, 64)
	if err != nil {
		return
	}
	switch topic {
	case sysDropped:
		s.dropped.Set(float64(v))
		s.mu.Lock()
		prev := s.lastDrop
		s.lastDrop = v
		s.mu.Unlock()
		if v < prev {
			s.log.Info("the MQTT broker's drop count went back (broker restarted)", "dropped_total", v, "before", prev)
			prev = 0
		}
		if v > prev && v > 0 {
			s.log.Error("the MQTT broker dropped messages because its queue or inflight limit was reached: devices got a PUBACK for messages that are lost (raise max_queued_messages, or add bridges; see the README's troubleshooting)",
				"dropped_total", v, "since_last_report", v-max(prev, 0))
		}
	case sysStored:
		s.stored.Set(float64(v))
	}
}

// subscribed marks that the broker accepted the $SYS subscription: the drop
// count is 0 until Mosquitto reports otherwise.
func (s *brokerStats) subscribed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastDrop < 0 {
		s.lastDrop = 0
		s.dropped.Set(0)
	}
}

// subscribe asks for the broker's statistics with a subscription of its
// own (QoS 0), so that a broker that refuses it (no read permission on
// $SYS) costs the statistics only, never the bridge's main subscription.
func (s *brokerStats) subscribe(ctx context.Context, cm *autopaho.ConnectionManager) {
	sa, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: sysFilter, QoS: 0}}})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("mqtt subscription to the broker's statistics failed: iotpipe_bridge_broker_dropped_messages is unknown (-1)", "filter", sysFilter, "err", err)
		}
		return
	}
	if len(sa.Reasons) > 0 && sa.Reasons[0] >= 0x80 {
		s.log.Warn("the broker refused the subscription to its statistics: iotpipe_bridge_broker_dropped_messages is unknown (-1); grant the bridge read on $SYS/# to see messages the broker drops",
			"filter", sysFilter, "reason_code", sa.Reasons[0])
		return
	}
	s.subscribed()
}
