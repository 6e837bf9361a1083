// Package pipecheck holds what the whole-pipeline tests (test/kafka3,
// test/chaos) share: iotpipe stages run as child processes, the fleet's own
// record of what the MQTT broker acknowledged (parsed from the payloads
// with encoding/json, no project code) and the recomputation of every
// window from it, and readers of raw, the DLQ, device_metrics and the lake
// to compare with it.
package pipecheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/devicesim"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/schemas"
)

// Full reports whether the full size is asked for (IOTPIPE_FULL=1).
func Full() bool { return os.Getenv("IOTPIPE_FULL") == "1" }

// Stage is one iotpipe command run as a child process, as an operator runs
// it.
type Stage struct {
	name string
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func StartStage(t *testing.T, bin string, env []string, name string, args ...string) *Stage {
	t.Helper()
	s := &Stage{name: name, log: &syncBuffer{}, done: make(chan error, 1)}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env = env
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Kill()
			if err := <-s.done; err == nil {
				t.Logf("%s exited cleanly before the kill reached it", name)
			}
		}
		if t.Failed() {
			t.Logf("--- %s log (tail):\n%s", name, Tail(s.log.String(), 6000))
		}
	})
	return s
}

func Tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// Name is the stage's name in messages.
func (s *Stage) Name() string { return s.name }

// Log is what the stage wrote so far.
func (s *Stage) Log() string { return s.log.String() }

// Running fails the test when the stage has exited.
func (s *Stage) Running(t *testing.T) {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err
		t.Fatalf("%s exited by itself (%v): a stage must ride out a broker failure\n%s", s.name, err, Tail(s.log.String(), 4000))
	default:
	}
}

// Kill SIGKILLs the stage and waits until it is gone.
func (s *Stage) Kill() {
	_ = s.cmd.Process.Kill()
	err := <-s.done
	s.done <- err
}

// Exited reports whether the stage has exited, and how.
func (s *Stage) Exited() (bool, error) {
	select {
	case err := <-s.done:
		s.done <- err
		return true, err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM and expects exit code 0 within the bound.
func (s *Stage) Stop(t *testing.T, within time.Duration) {
	t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("%s did not exit cleanly on SIGTERM: %v\n%s", s.name, err, Tail(s.log.String(), 3000))
		}
	case <-time.After(within):
		t.Errorf("%s still running %s after SIGTERM", s.name, within)
		_ = s.cmd.Process.Kill()
		if err := <-s.done; err == nil {
			t.Logf("%s exited cleanly before the kill reached it", s.name)
		}
	}
}

// Sent is the fleet's own record of what the broker acknowledged (PUBACK),
// parsed from the payloads it published: the independent reference every
// store is compared with.
type Sent struct {
	mu      sync.Mutex
	valid   map[MsgID]Reading
	invalid int64
	// badByReason holds, per DLQ reason, the distinct (MQTT topic,
	// payload) pairs of the invalid messages.
	badByReason map[string]map[string]bool
	window      int64 // µs
	// lateAfter: a valid message whose event time is this much older than
	// its acknowledgement was sent late on purpose (0: none was).
	lateAfter time.Duration
	parseErr  error
}

// MsgID identifies a device message.
type MsgID struct {
	Device string
	Seq    int64
}

// Reading is an acknowledged valid message as the device sent it.
type Reading struct {
	At     time.Time
	Values map[string]float64
	// Late: sent late on purpose (see LateAfter); the processor may
	// accept it or dead-letter it as late.
	Late bool
}

// NewSent returns an empty record for windows of the given size.
func NewSent(window time.Duration) *Sent {
	return &Sent{valid: map[MsgID]Reading{}, badByReason: map[string]map[string]bool{}, window: window.Microseconds()}
}

// LateAfter makes the record tell the readings sent late on purpose
// (devicesim LateFraction, LateBy) from on-time ones: those whose event
// time is more than d older than their acknowledgement. Choose d between
// the out-of-order shift plus the longest outage and LateBy. Whether the
// processor finds such a reading late depends on its device's own clock
// (a device with no newer reading yet accepts it): the DLQ tells, see
// Windows and CheckLate. An on-time reading is never late.
func (s *Sent) LateAfter(d time.Duration) *Sent {
	s.lateAfter = d
	return s
}

// OnAck is devicesim's OnAck: payloads are ValidRFC3339Metrics,
// {"seq":N,"ts":"<RFC 3339>","metrics":{...}}, parsed here with
// encoding/json (no project code).
func (s *Sent) OnAck(m *devicesim.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if !m.Kind.Valid() {
		s.invalid++
		r := string(m.Kind.Reason())
		if s.badByReason[r] == nil {
			s.badByReason[r] = map[string]bool{}
		}
		s.badByReason[r][m.Topic+"\x00"+string(m.Payload)] = true
		return
	}
	var p struct {
		Seq     int64              `json:"seq"`
		TS      time.Time          `json:"ts"`
		Metrics map[string]float64 `json:"metrics"`
	}
	if err := json.Unmarshal(m.Payload, &p); err != nil {
		s.parseErr = fmt.Errorf("payload %q: %w", m.Payload, err)
		return
	}
	late := s.lateAfter > 0 && now.Sub(p.TS) > s.lateAfter
	s.valid[MsgID{Device: m.DeviceID, Seq: p.Seq}] = Reading{At: p.TS, Values: p.Metrics, Late: late}
}

// WindowKey names one window aggregate.
type WindowKey struct {
	device, metric string
	start          int64 // µs since the epoch
}

// Agg is the part of a window aggregate that is recomputed.
type Agg struct {
	count    int64
	sum      float64
	min, max float64
}

// Windows recomputes every window aggregate from what was acknowledged,
// each device message once, leaving out those the processor did not
// accept (dead, see Dead: told by raw and the DLQ): a reading sent late on
// purpose is late or not by its own device's clock, so the DLQ tells
// which it was; CheckLate checks that only such readings are in it.
func (s *Sent) Windows(dead map[MsgID]bool) map[WindowKey]Agg {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[WindowKey]Agg{}
	for id, r := range s.valid {
		if dead[id] {
			continue
		}
		us := r.At.UnixMicro()
		start := us - ((us%s.window)+s.window)%s.window
		for name, v := range r.Values {
			k := WindowKey{id.Device, name, start}
			a, ok := out[k]
			if !ok {
				a = Agg{min: v, max: v}
			}
			a.count++
			a.sum += v
			a.min, a.max = math.Min(a.min, v), math.Max(a.max, v)
			out[k] = a
		}
	}
	return out
}

// Dead returns the device messages the processor did not accept: every
// copy of it in raw (rawCopies, as ReadRaw returns) went to the DLQ as
// late (lateCopies, per device message). A message of which some copy in
// raw is not a late dead letter was accepted once (its other copies
// removed as duplicates, or dead-lettered as late when they came after
// its window had closed: a device's re-send or a bridge's redelivery of a
// reading sent late on purpose).
func Dead(rawCopies, lateCopies map[MsgID]int) map[MsgID]bool {
	out := map[MsgID]bool{}
	for id, n := range lateCopies {
		if n >= rawCopies[id] {
			out[id] = true
		}
	}
	return out
}

// CheckLate checks the copies the processor dead-lettered as late
// (lateCopies, per device message): each of an acknowledged message sent
// late on purpose, and no more copies than raw holds. A reading sent late
// on purpose may be accepted or dead-lettered (by its device's own clock);
// one sent on time must never be late.
func (s *Sent) CheckLate(rawCopies, lateCopies map[MsgID]int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var bad []string
	for id, n := range lateCopies {
		r, ok := s.valid[id]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("%s/%d never acknowledged", id.Device, id.Seq))
		case !r.Late:
			bad = append(bad, fmt.Sprintf("%s/%d sent on time (event time %s)", id.Device, id.Seq, r.At.UTC().Format(time.TimeOnly)))
		case n > rawCopies[id]:
			bad = append(bad, fmt.Sprintf("%s/%d dead-lettered %d times, %d copies in raw", id.Device, id.Seq, n, rawCopies[id]))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("%d late dead letters that must not be, e.g.: %s", len(bad), strings.Join(bad[:min(len(bad), 10)], "; "))
	}
	return nil
}

// Accepted returns the acknowledged valid device messages the processor
// accepted (all but dead, the late dead letters) and their values
// (readings).
func (s *Sent) Accepted(dead map[MsgID]bool) (msgs, values int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, r := range s.valid {
		if !dead[id] {
			msgs++
			values += int64(len(r.Values))
		}
	}
	return msgs, values
}

// CompareAccepted compares a store holding the accepted readings only
// (seen: how often each device message is in it) with the accepted set
// (acknowledged, valid, not in dead): the accepted ones missing, the
// extra copies, and the messages present that are not accepted (never
// acknowledged, or dead-lettered as late).
func (s *Sent) CompareAccepted(seen map[MsgID]int, dead map[MsgID]bool) (missing, dups, notAccepted int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.valid {
		if dead[id] {
			continue
		}
		switch n := seen[id]; {
		case n == 0:
			missing++
		case n > 1:
			dups += n - 1
		}
	}
	for id := range seen {
		if _, ok := s.valid[id]; !ok || dead[id] {
			notAccepted++
		}
	}
	return missing, dups, notAccepted
}

// ReadingsRows returns, from a readings table, how many rows each device
// message has, and the count of distinct (device, metric, seq).
func ReadingsRows(ctx context.Context, pg *pgxpool.Pool, schema string) (perMsg map[MsgID]int, rows, distinct int64, err error) {
	if err := pg.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), count(DISTINCT (device_id, metric, seq)) FROM %s.readings`, schema)).Scan(&rows, &distinct); err != nil {
		return nil, 0, 0, err
	}
	r, err := pg.Query(ctx, fmt.Sprintf(`SELECT device_id, seq, count(DISTINCT metric) FROM %s.readings GROUP BY device_id, seq`, schema))
	if err != nil {
		return nil, 0, 0, err
	}
	defer r.Close()
	perMsg = map[MsgID]int{}
	for r.Next() {
		var id MsgID
		var n int
		if err := r.Scan(&id.Device, &id.Seq, &n); err != nil {
			return nil, 0, 0, err
		}
		perMsg[id] = 1
	}
	return perMsg, rows, distinct, r.Err()
}

// Counts returns the acknowledged valid device messages, the invalid
// ones and the values (readings) of the valid ones.
func (s *Sent) Counts() (valid, invalid, values int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.valid {
		values += int64(len(r.Values))
	}
	return int64(len(s.valid)), s.invalid, values
}

// Late returns the distinct device messages sent late on purpose.
func (s *Sent) Late() map[MsgID]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[MsgID]bool{}
	for id, r := range s.valid {
		if r.Late {
			out[id] = true
		}
	}
	return out
}

// BadByReason returns, per DLQ reason, how many distinct (topic, payload)
// invalid messages were acknowledged.
func (s *Sent) BadByReason() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for r, set := range s.badByReason {
		out[r] = len(set)
	}
	return out
}

// Err is the first payload the record could not parse.
func (s *Sent) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.parseErr
}

// CompareRaw counts the acknowledged valid messages missing from raw (as
// returned by ReadRaw) and the extra copies of those present, and the
// messages in raw the fleet never had acknowledged.
func (s *Sent) CompareRaw(raw map[MsgID]int) (missing, dups, unknown int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.valid {
		switch n := raw[id]; {
		case n == 0:
			missing++
		case n > 1:
			dups += n - 1
		}
	}
	for id := range raw {
		if _, ok := s.valid[id]; !ok {
			unknown++
		}
	}
	return missing, dups, unknown
}

// ReadRaw reads a topic of canonical readings from the start (read
// committed) until it is quiet (see Drain), and returns how often each
// device message is in it.
func ReadRaw(t *testing.T, ctx context.Context, env *testenv.Env, topic string) map[MsgID]int {
	t.Helper()
	seen := map[MsgID]int{}
	DrainTopic(t, ctx, env, topic, func(r *kgo.Record) {
		var rd schemas.Reading
		if err := schemas.DecodeRaw(r.Value, &rd); err != nil {
			t.Errorf("raw record %s/%d@%d does not decode: %v", r.Topic, r.Partition, r.Offset, err)
			return
		}
		seen[MsgID{Device: rd.DeviceID, Seq: rd.Seq}]++
	})
	return seen
}

// Drain passes every record the consumer reads to fn until none came for
// 3 s after the first one, or none at all for 30 s (a client that has just
// started may take seconds to find the leaders on a busy machine). Bridge
// heartbeats (schemas.IsHeartbeat) are not passed on.
func Drain(t *testing.T, ctx context.Context, cl *kgo.Client, fn func(*kgo.Record)) {
	t.Helper()
	start, last := time.Now(), time.Time{}
	for {
		if last.IsZero() && time.Since(start) > 30*time.Second || !last.IsZero() && time.Since(last) > 3*time.Second {
			return
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			t.Fatal(ctx.Err())
		}
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Logf("read %s/%d: %v", topic, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			if schemas.IsHeartbeat(r.Headers) {
				// A bridge's heartbeat: not passed on, and, as a running
				// bridge writes one every second, only one written before
				// the drain began counts as reading.
				if r.Timestamp.Before(start) {
					last = time.Now()
				}
				return
			}
			last = time.Now()
			fn(r)
		})
	}
}

// CountRecords counts a topic's committed records.
func CountRecords(t *testing.T, ctx context.Context, env *testenv.Env, topic string) int64 {
	t.Helper()
	var n int64
	DrainTopic(t, ctx, env, topic, func(*kgo.Record) { n++ })
	return n
}

// DrainTopic reads topic from the start, read committed, with a new client
// and Drain, decoding lz4 with Decompressor (franz-go's default takes
// minutes for a raw topic under -race). When it read nothing while the
// topic holds records, it logs what the cluster says about the topic
// (leaders, ISRs, start and end offsets) and the client's own debug log,
// and tries again with another client, three times at most.
func DrainTopic(t *testing.T, ctx context.Context, env *testenv.Env, topic string, fn func(*kgo.Record)) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		klog := &syncBuffer{}
		start := time.Now()
		cl := env.Kafka(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.WithDecompressor(Decompressor),
			kgo.WithLogger(kgo.BasicLogger(klog, kgo.LogLevelDebug, func() string {
				return time.Since(start).Round(time.Millisecond).String() + " "
			})))
		n := 0
		Drain(t, ctx, cl, func(r *kgo.Record) { n++; fn(r) })
		cl.Close()
		if n > 0 {
			return
		}
		adm := kadm.NewClient(env.Kafka(t))
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ends, err := adm.ListEndOffsets(lctx, topic)
		cancel()
		if err == nil {
			err = ends.Error()
		}
		var end int64
		ends.Each(func(o kadm.ListedOffset) { end += o.Offset })
		if err == nil && end == 0 {
			return // empty
		}
		t.Logf("read nothing of %s, which holds records up to %d offsets (list offsets: %v); the cluster says:\n%s\nthe client's log (last 200 lines):\n%s",
			topic, end, err, DescribeTopic(ctx, adm, topic), tailLines(klog.String(), 200))
		if attempt == 3 {
			return
		}
		t.Logf("trying again with a new client")
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// DescribeTopic says, for a diagnosis, which brokers the cluster lists and,
// per partition of topic, the leader, its epoch, the replicas, the ISR and
// the start and end offsets.
func DescribeTopic(ctx context.Context, adm *kadm.Client, topic string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var b strings.Builder
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return fmt.Sprintf("metadata: %v", err)
	}
	for _, br := range md.Brokers {
		fmt.Fprintf(&b, "broker %d %s:%d\n", br.NodeID, br.Host, br.Port)
	}
	fmt.Fprintf(&b, "controller %d\n", md.Controller)
	starts, serr := adm.ListStartOffsets(ctx, topic)
	ends, eerr := adm.ListEndOffsets(ctx, topic)
	td := md.Topics[topic]
	if td.Err != nil {
		fmt.Fprintf(&b, "topic %s: %v\n", topic, td.Err)
	}
	for _, p := range td.Partitions.Sorted() {
		fmt.Fprintf(&b, "%s/%d leader %d epoch %d replicas %v isr %v", topic, p.Partition, p.Leader, p.LeaderEpoch, p.Replicas, p.ISR)
		if p.Err != nil {
			fmt.Fprintf(&b, " err %v", p.Err)
		}
		if serr == nil {
			if o, ok := starts.Lookup(topic, p.Partition); ok {
				fmt.Fprintf(&b, " start %d (%v)", o.Offset, o.Err)
			}
		}
		if eerr == nil {
			if o, ok := ends.Lookup(topic, p.Partition); ok {
				fmt.Fprintf(&b, " end %d (%v)", o.Offset, o.Err)
			}
		}
		b.WriteString("\n")
	}
	if serr != nil || eerr != nil {
		fmt.Fprintf(&b, "list offsets: %v %v\n", serr, eerr)
	}
	return b.String()
}

// CheckMetrics compares device_metrics with the recomputation: every
// window present once with the same count, sum, min and max, none extra.
func CheckMetrics(ctx context.Context, pg *pgxpool.Pool, schema string, want map[WindowKey]Agg) error {
	rows, err := pg.Query(ctx, fmt.Sprintf(`SELECT device_id, metric, bucket, count, sum, min, max FROM %s.device_metrics`, schema))
	if err != nil {
		return err
	}
	defer rows.Close()
	got := map[WindowKey]Agg{}
	for rows.Next() {
		var k WindowKey
		var a Agg
		var bucket time.Time
		if err := rows.Scan(&k.device, &k.metric, &bucket, &a.count, &a.sum, &a.min, &a.max); err != nil {
			return err
		}
		k.start = bucket.UnixMicro()
		got[k] = a
	}
	if err := rows.Err(); err != nil {
		return err
	}
	var diffs []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("missing %s/%s@%s (count %d)", k.device, k.metric, time.UnixMicro(k.start).UTC().Format(time.TimeOnly), w.count))
		case g.count != w.count || !near(g.sum, w.sum) || g.min != w.min || g.max != w.max:
			diffs = append(diffs, fmt.Sprintf("%s/%s@%s: got count %d sum %g min %g max %g, want %d %g %g %g", k.device, k.metric,
				time.UnixMicro(k.start).UTC().Format(time.TimeOnly), g.count, g.sum, g.min, g.max, w.count, w.sum, w.min, w.max))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("extra %s/%s@%s (count %d)", k.device, k.metric, time.UnixMicro(k.start).UTC().Format(time.TimeOnly), g.count))
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		return fmt.Errorf("%d of %d windows differ (of %d in the table), e.g.:\n  %s", len(diffs), len(want), len(got), strings.Join(diffs[:min(len(diffs), 10)], "\n  "))
	}
	return nil
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

// LakeRows sums the row counts of the Parquet files under prefix, read
// from their footers.
func LakeRows(ctx context.Context, cl *minio.Client, bucket, prefix string) (int64, error) {
	var total int64
	for obj := range cl.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return 0, obj.Err
		}
		o, err := cl.GetObject(ctx, bucket, obj.Key, minio.GetObjectOptions{})
		if err != nil {
			return 0, err
		}
		var buf bytes.Buffer
		_, err = buf.ReadFrom(o)
		_ = o.Close()
		if err != nil {
			return 0, err
		}
		r, err := file.NewParquetReader(bytes.NewReader(buf.Bytes()))
		if err != nil {
			return 0, fmt.Errorf("%s: %w", obj.Key, err)
		}
		total += r.NumRows()
		_ = r.Close()
	}
	return total, nil
}

// EndOffsets returns the end offset of each partition of topic; a
// partition without a reachable leader is missing.
func EndOffsets(ctx context.Context, adm *kadm.Client, topic string) map[int32]int64 {
	out := map[int32]int64{}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	lo, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return out
	}
	lo.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			out[o.Partition] = o.Offset
		}
	})
	return out
}

// Committed returns the group's committed offsets on topic.
func Committed(ctx context.Context, adm *kadm.Client, group, topic string) map[int32]int64 {
	out := map[int32]int64{}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return out
	}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.Topic == topic {
			out[o.Partition] = o.At
		}
	})
	return out
}

// AtLeast reports whether have reaches want on every partition of want.
func AtLeast(have, want map[int32]int64) bool {
	for p, w := range want {
		if have[p] < w {
			return false
		}
	}
	return true
}

// Beyond reports whether have is past want on every partition of want.
func Beyond(have, want map[int32]int64) bool {
	for p, w := range want {
		h, ok := have[p]
		if !ok || h <= w {
			return false
		}
	}
	return true
}

// Load runs the fleet in segments of a few seconds, each with devices of
// its own (a device's seq is never reused), until stop is closed; every
// segment ends with all its PUBACKs in, so that nothing is left
// unconfirmed.
type Load struct {
	Cfg     devicesim.Config
	Segment time.Duration
	// Between, when set, runs after each segment (all its PUBACKs in,
	// no device connected) and before the next.
	Between func(segment int)

	mu       sync.Mutex
	segments int
	total    devicesim.Stats
	live     *devicesim.Sim
}

// Acked is the number of messages acknowledged so far.
func (l *Load) Acked() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.total.Acked
	if l.live != nil {
		n += l.live.Stats().Acked
	}
	return n
}

// Run runs segments until stop is closed or ctx ends.
func (l *Load) Run(ctx context.Context, stop <-chan struct{}) error {
	for seg := 0; ; seg++ {
		select {
		case <-stop:
			return nil
		default:
		}
		cfg := l.Cfg
		cfg.FirstDevice = seg * cfg.Devices
		cfg.MessagesPerDevice = int(cfg.Rate * l.Segment.Seconds())
		sim, err := devicesim.New(cfg, service.Deps{})
		if err != nil {
			return err
		}
		l.mu.Lock()
		l.live = sim
		l.mu.Unlock()
		err = sim.Run(ctx)
		st := sim.Stats()
		l.mu.Lock()
		l.live = nil
		l.segments++
		l.total.Published += st.Published
		l.total.Acked += st.Acked
		l.total.AckedValid += st.AckedValid
		l.total.AckedInvalid += st.AckedInvalid
		l.total.Refused += st.Refused
		l.total.NoSubscribers += st.NoSubscribers
		l.total.Unconfirmed += st.Unconfirmed
		l.total.Connections += st.Connections
		l.total.Duplicates += st.Duplicates
		l.total.OutOfOrder += st.OutOfOrder
		l.total.Late += st.Late
		l.mu.Unlock()
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if l.Between != nil {
			l.Between(seg)
		}
	}
}

// Segments is the number of segments done and the fleet's totals.
func (l *Load) Segments() (int, devicesim.Stats) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.segments, l.total
}
