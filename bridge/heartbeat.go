package bridge

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/schemas"
)

// DefaultHeartbeatInterval is the default of Config.HeartbeatInterval.
const DefaultHeartbeatInterval = time.Second

// maxHeartbeatPartitions bounds the heartbeat records buffered at once (a
// beat waits until the previous one is acknowledged): the producer's
// buffer has room for them beside the messages in flight.
const maxHeartbeatPartitions = 10000

// Heartbeats: every Config.HeartbeatInterval the bridge writes to every
// partition of TopicRaw a heartbeat record (schemas.Heartbeat, header
// schemas.HeaderHeartbeat) holding its instance id (the MQTT client id)
// and a time H, meaning: every MQTT message this bridge received before H
// was produced to this partition before this record, and the MQTT broker
// had no message for the bridge at H that it had not sent. The processor
// measures a device's silence on these times instead of its own wall
// clock, so that a stall of the ingest path is not taken for silent
// devices (see the processor's package comment).
//
// H is the send time of the last PINGREQ the broker answered (the bridge
// sends one every interval, see pinger.probe): the broker sends its
// PINGRESP after every message it had for the bridge, and paho hands each
// message to onPublish before reading the next packet. The records are
// produced under hb.mu, which onPublish also holds from taking a
// message's receive time to its Produce call; records of one partition
// keep their Produce order (idempotent producer), so every message
// received before H is before the heartbeat in each partition.
//
// H must not advance while messages may be waiting upstream of the bridge
// or in it, so no heartbeat is written while
//   - the MQTT connection is down or its subscription not confirmed;
//   - the bridge is busy: half its in-flight slots or more are taken, or
//     it holds back reading. The broker queues messages for it, and still
//     answers pings, when its in-flight count reaches the Receive Maximum;
//     that count includes the PUBACKs the bridge has released but not
//     yet written or the broker not yet read (see MQTT.AckInterval), so
//     the bridge's own count can be lower: half the limit leaves room for
//     them;
//   - a ping has been unanswered for longer than an interval (a broker
//     that is frozen, or a link that is);
//   - a produce (a message's or the previous heartbeat's) has been
//     outstanding for longer than an interval (Kafka slow or down);
//
// and H is only ever the send time of a ping sent after the last moment
// one of these was seen. So H freezes at the last moment the path was
// provably flowing, and moves on about one interval after it flows again.
type heartbeater struct {
	mu sync.Mutex // held by onPublish from receive time to Produce, and by beat

	lastStall   atomic.Int64 // UnixNano of the last stall seen (see above)
	last        time.Time    // H of the last heartbeat (under mu)
	busy        int          // in-flight slots taken from which the path counts as stalled
	outstanding atomic.Int64 // heartbeat records not yet acknowledged
	written     prometheus.Counter
	withheld    prometheus.Counter
	failed      prometheus.Counter
}

func newHeartbeater(reg prometheus.Registerer, receiveMaximum int) *heartbeater {
	const ns, sub = "iotpipe", "bridge"
	h := &heartbeater{
		busy: max(1, receiveMaximum/2),
		written: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "heartbeats_total",
			Help: "Heartbeat records (one per partition of the raw topic and interval) Kafka acknowledged."}),
		withheld: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "heartbeats_withheld_total",
			Help: "Heartbeat intervals in which no heartbeat was written because the ingest path may have been stalled (MQTT down or a ping unanswered, half the in-flight slots taken, a produce outstanding): the processors' clock for device silence does not advance meanwhile."}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "heartbeat_errors_total",
			Help: "Heartbeat records Kafka refused or that could not be buffered."}),
	}
	if reg != nil {
		reg.MustRegister(h.written, h.withheld, h.failed)
	}
	return h
}

// stall notes that the ingest path may be stalled now.
func (h *heartbeater) stall() { h.lastStall.Store(time.Now().UnixNano()) }

// oldest returns the receive time of the oldest message in flight
// (UnixNano), 0 if none.
func (w *window) oldest() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.size == 0 {
		return 0
	}
	return w.ring[w.head].now.UnixNano()
}

// stalled reports whether the ingest path may be stalled at now (noting
// it when it is).
func (b *Bridge) stalled(now time.Time, interval time.Duration) bool {
	stall := !b.mqttUp.Load() || !b.subscribed.Load() || b.holding.Load() || b.stopping.Load() ||
		len(b.slots) >= b.hb.busy || b.hb.outstanding.Load() > 0
	if !stall {
		if _, w := b.ping.roundTrip(); !w.IsZero() && now.Sub(w) > interval {
			stall = true
		}
	}
	if !stall {
		if o := b.win.oldest(); o != 0 && now.UnixNano()-o > int64(interval) {
			stall = true
		}
	}
	if stall {
		b.hb.stall()
	}
	return stall
}

// runHeartbeats writes the heartbeats until ctx ends.
func (b *Bridge) runHeartbeats(ctx context.Context, kcl *kgo.Client) {
	interval := b.cfg.HeartbeatInterval
	adm := kadm.NewClient(kcl)
	var parts int32
	var partsAt time.Time
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if parts == 0 || time.Since(partsAt) > time.Minute {
			// The partitions of the raw topic, again every minute (a topic
			// may get more).
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			td, err := adm.ListTopics(lctx, b.cfg.TopicRaw)
			cancel()
			if d, ok := td[b.cfg.TopicRaw]; err == nil && ok && d.Err == nil && len(d.Partitions) > 0 {
				parts, partsAt = int32(len(d.Partitions)), time.Now()
			}
		}
		if parts == 0 {
			continue
		}
		b.beat(kcl, parts, interval)
	}
}

// beat writes one heartbeat to each of parts partitions, unless the
// ingest path may be stalled or no ping sent since the last stall has
// been answered; then it sends the next ping.
func (b *Bridge) beat(kcl *kgo.Client, parts int32, interval time.Duration) {
	h := b.hb
	defer b.ping.probe()
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	if parts > maxHeartbeatPartitions || b.stalled(now, interval) {
		h.withheld.Inc()
		return
	}
	at, _ := b.ping.roundTrip()
	if at.UnixNano() <= h.lastStall.Load() || !at.After(h.last) {
		if at.UnixNano() <= h.lastStall.Load() {
			h.withheld.Inc()
		}
		return
	}
	h.last = at
	hb := schemas.Heartbeat{Bridge: b.cfg.MQTT.ClientID, Time: at.UTC().Truncate(time.Microsecond)}
	h.outstanding.Add(int64(parts))
	for p := range parts {
		// TryProduce: never block onPublish behind a full buffer; a
		// heartbeat that does not fit is simply not written.
		kcl.TryProduce(context.Background(), schemas.HeartbeatRecord(b.cfg.TopicRaw, p, hb), func(_ *kgo.Record, err error) {
			h.outstanding.Add(-1)
			if err != nil {
				h.failed.Inc()
				h.stall()
				return
			}
			h.written.Inc()
		})
	}
}

// heartbeatPartitioner sends heartbeat records to the partition they
// name and every other record where the inner partitioner puts it.
type heartbeatPartitioner struct{ inner kgo.Partitioner }

func (p heartbeatPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	tp := p.inner.ForTopic(topic)
	bp, _ := tp.(kgo.TopicBackupPartitioner)
	return &heartbeatTopicPartitioner{inner: tp, backup: bp}
}

type heartbeatTopicPartitioner struct {
	inner  kgo.TopicPartitioner
	backup kgo.TopicBackupPartitioner
}

func (p *heartbeatTopicPartitioner) RequiresConsistency(r *kgo.Record) bool {
	return schemas.IsHeartbeat(r.Headers) || p.inner.RequiresConsistency(r)
}

func (p *heartbeatTopicPartitioner) Partition(r *kgo.Record, n int) int {
	if schemas.IsHeartbeat(r.Headers) {
		return int(r.Partition)
	}
	return p.inner.Partition(r, n)
}

func (p *heartbeatTopicPartitioner) PartitionByBackup(r *kgo.Record, n int, it kgo.TopicBackupIter) int {
	if schemas.IsHeartbeat(r.Headers) {
		return int(r.Partition)
	}
	if p.backup != nil {
		return p.backup.PartitionByBackup(r, n, it)
	}
	return p.inner.Partition(r, n)
}

func (p *heartbeatTopicPartitioner) OnNewBatch() {
	if nb, ok := p.inner.(kgo.TopicPartitionerOnNewBatch); ok {
		nb.OnNewBatch()
	}
}
