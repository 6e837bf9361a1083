package devicesim

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/retry"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/schemas"
)

// Config configures a simulated fleet. Start from DefaultConfig; the
// defaults noted below are its values.
type Config struct {
	// URL is the broker, mqtt://host:port, or mqtts://host:port for TLS.
	URL string
	// Username and Password authenticate every connection.
	Username, Password string
	// TLS (mqtts:// only): CAFile is the CA the broker's certificate must
	// chain to (empty: the system's roots); CertFile and KeyFile are one
	// client identity for every connection; CertDir instead holds one per
	// device, <CertDir>/<device id>.crt and .key as iotpipe devices add and
	// import write them (then DevicesPerConn must be 1: a connection is a
	// device). ServerName is the name the broker's certificate must hold
	// (empty: the URL's host). Files are read on every connection.
	CAFile, CertFile, KeyFile, CertDir, ServerName string
	// ClientIDPrefix starts the client id of each connection (a counter
	// follows); empty: "iotpipe-sim-" plus a random suffix.
	ClientIDPrefix string

	// Devices is the fleet size (default 10).
	Devices int
	// FirstDevice numbers the first device (default 0), so that several
	// simulators can run disjoint fleets.
	FirstDevice int
	// DeviceIDPrefix starts every device id (default "dev-"); the device
	// number follows, zero-padded to 6 digits.
	DeviceIDPrefix string
	// DevicesPerConn is how many devices share one MQTT connection
	// (default 100).
	DevicesPerConn int
	// TopicTemplate is where devices publish; "{device_id}" is replaced
	// (default schemas.DefaultTopicTemplate).
	TopicTemplate string

	// Rate is messages per second per device; 0 publishes as fast as the
	// broker acknowledges.
	Rate float64
	// MessagesPerDevice stops each device after that many messages;
	// 0 runs until the context ends.
	MessagesPerDevice int
	// InvalidFraction of the messages (0 to 1) carry an invalid payload,
	// chosen deterministically by device and seq among InvalidKinds.
	InvalidFraction float64
	// InvalidKinds are the bad inputs to use (default DefaultInvalidKinds).
	InvalidKinds []Kind
	// ValidKinds are the valid formats to rotate through (default all).
	ValidKinds []Kind

	// DuplicateFraction of the messages (0 to 1) repeat the device's
	// previous message exactly (same seq, event time and values) in place
	// of a new one.
	DuplicateFraction float64
	// OutOfOrderFraction of the valid messages carry an event time
	// OutOfOrderBy (default DefaultOutOfOrderBy) in the past: behind the
	// device's previous readings but within the processor's lateness.
	OutOfOrderFraction float64
	OutOfOrderBy       time.Duration
	// LateFraction of the valid messages carry an event time LateBy
	// (default DefaultLateBy) in the past: later than a window's allowed
	// lateness, so the processor sends them to the DLQ as late.
	LateFraction float64
	LateBy       time.Duration

	// MaxInFlight caps unacknowledged messages per connection (default
	// 1000); the broker's Receive Maximum lowers it.
	MaxInFlight int
	// OnAck, when set, is called for each message whose PUBACK reported
	// success, on that connection's reader goroutine; the Message is only
	// valid during the call.
	OnAck func(*Message)
	// Now gives the event time of each reading (nil: time.Now).
	Now func() time.Time

	// Duration stops the fleet after this long (0: when ctx ends or every
	// device sent MessagesPerDevice).
	Duration time.Duration
	// Progress, when set, receives a progress line every ProgressInterval
	// (0: none) and a summary when Run ends.
	Progress         io.Writer
	ProgressInterval time.Duration
}

// Message is one simulated publication.
type Message struct {
	// Device is the device number; DeviceID its id.
	Device   int
	DeviceID string
	// Seq is the device's message counter, starting at 0 (also in the
	// payload for every kind that carries JSON fields).
	Seq     int64
	Kind    Kind
	Topic   string
	Payload []byte
}

// Stats counts the fleet's messages.
type Stats struct {
	// Published is the number of PUBLISH packets written.
	Published int64
	// Acked got a successful PUBACK; AckedValid and AckedInvalid split it.
	Acked, AckedValid, AckedInvalid int64
	// Refused got a PUBACK with an error reason code.
	Refused int64
	// NoSubscribers got a PUBACK with reason 0x10 "no matching
	// subscribers": the broker accepted the message and dropped it, as
	// nobody subscribed. They are not counted in Acked nor passed to
	// OnAck.
	NoSubscribers int64
	// Unconfirmed were written but the connection dropped before their
	// PUBACK.
	Unconfirmed int64
	// Connections made, the first ones included.
	Connections int64
	// Duplicates, OutOfOrder and Late count the PUBLISH packets written
	// with those modifications (see Config).
	Duplicates, OutOfOrder, Late int64
}

// Sim is a simulated fleet.
type Sim struct {
	cfg   Config
	log   *slog.Logger
	conns []*conn

	published, acked, ackedValid, ackedInvalid, refused, unconfirmed, connections, noSubs atomic.Int64
	duplicates, outOfOrder, late                                                          atomic.Int64
}

// DefaultConfig returns every default of Config: 10 devices publishing
// realistic payloads once a second each to a local broker, no imperfection.
func DefaultConfig() Config {
	return Config{
		URL:              "mqtt://localhost:1883",
		Devices:          10,
		DeviceIDPrefix:   "dev-",
		DevicesPerConn:   100,
		TopicTemplate:    schemas.DefaultTopicTemplate,
		Rate:             1,
		InvalidKinds:     DefaultInvalidKinds,
		ValidKinds:       []Kind{Realistic},
		OutOfOrderBy:     DefaultOutOfOrderBy,
		LateBy:           DefaultLateBy,
		MaxInFlight:      1000,
		ProgressInterval: 5 * time.Second,
	}
}

// AllValidKinds are every valid payload format (every timestamp format the
// bridge accepts, and Realistic).
func AllValidKinds() []Kind {
	var out []Kind
	for k := Kind(0); k < numValid; k++ {
		out = append(out, k)
	}
	return out
}

// Validate reports every invalid field as a *config.FieldError.
func (cfg *Config) Validate() error {
	var p config.Problems
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "mqtt" && u.Scheme != "tcp" && u.Scheme != "mqtts") || u.Host == "" {
		p.Add("URL", "%q: want mqtt://host:port or mqtts://host:port", cfg.URL)
	}
	if u != nil && u.Scheme == "mqtts" {
		files := certs.ClientFiles{CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile}
		var fe *certs.FileError
		if err := files.Check(); errors.As(err, &fe) {
			p.Add(fe.Field, "%v", fe.Err)
		}
		if cfg.CertDir != "" {
			p.Check(cfg.CertFile != "" || cfg.KeyFile != "", "CertDir", "give either {CertDir} (one identity per device) or {CertFile} and {KeyFile} (one for all), not both")
			p.Check(cfg.DevicesPerConn != 1, "DevicesPerConn", "must be 1 with {CertDir}: each device connects with its own certificate")
			if st, err := os.Stat(cfg.CertDir); err != nil || !st.IsDir() {
				p.Add("CertDir", "%q is not a folder", cfg.CertDir)
			} else if cfg.Devices >= 1 && cfg.FirstDevice >= 0 {
				first := filepath.Join(cfg.CertDir, DeviceID(cfg.DeviceIDPrefix, cfg.FirstDevice)+".crt")
				if _, err := os.Stat(first); err != nil {
					p.Add("CertDir", "no certificate for the first device: %v (iotpipe devices add/import --out %s)", err, cfg.CertDir)
				}
			}
		}
	} else if cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "" || cfg.CertDir != "" || cfg.ServerName != "" {
		p.Add("URL", "TLS files or a server name are set but the URL is not mqtts://")
	}
	p.Check(cfg.Devices < 1, "Devices", "must be at least 1")
	p.Check(cfg.FirstDevice < 0, "FirstDevice", "must not be negative")
	p.Check(cfg.DevicesPerConn < 1, "DevicesPerConn", "must be at least 1")
	p.Check(cfg.MessagesPerDevice < 0, "MessagesPerDevice", "must not be negative")
	if cfg.DeviceIDPrefix == "" || strings.ContainsAny(cfg.DeviceIDPrefix, "/+#") ||
		len(DeviceID(cfg.DeviceIDPrefix, cfg.FirstDevice+cfg.Devices)) > schemas.MaxDeviceIDLen {
		p.Add("DeviceIDPrefix", "%q must be non-empty, without / + #, and leave device ids of at most %d bytes", cfg.DeviceIDPrefix, schemas.MaxDeviceIDLen)
	}
	if strings.Count(cfg.TopicTemplate, schemas.DeviceIDPlaceholder) != 1 {
		p.Add("TopicTemplate", "%q must hold %s exactly once", cfg.TopicTemplate, schemas.DeviceIDPlaceholder)
	}
	p.Check(!(cfg.Rate >= 0 && cfg.Rate <= 1e6), "Rate", "must be between 0 and 1e6")
	p.Check(!(cfg.InvalidFraction >= 0 && cfg.InvalidFraction <= 1), "InvalidFraction", "must be between 0 and 1")
	p.Check(!(cfg.DuplicateFraction >= 0 && cfg.DuplicateFraction <= 1), "DuplicateFraction", "must be between 0 and 1")
	p.Check(!(cfg.OutOfOrderFraction >= 0 && cfg.OutOfOrderFraction <= 1), "OutOfOrderFraction", "must be between 0 and 1")
	p.Check(!(cfg.LateFraction >= 0 && cfg.LateFraction <= 1), "LateFraction", "must be between 0 and 1")
	p.Check(cfg.OutOfOrderBy <= 0, "OutOfOrderBy", "must be positive")
	p.Check(cfg.LateBy <= 0, "LateBy", "must be positive")
	p.Check(cfg.InvalidFraction > 0 && len(cfg.InvalidKinds) == 0, "InvalidKinds", "empty while InvalidFraction > 0")
	for _, k := range cfg.InvalidKinds {
		if k.Valid() || k.Reason() == "" {
			p.Add("InvalidKinds", "%v is not an invalid kind", k)
		}
	}
	p.Check(len(cfg.ValidKinds) == 0, "ValidKinds", "must not be empty")
	for _, k := range cfg.ValidKinds {
		if !k.Valid() {
			p.Add("ValidKinds", "%v is not a valid kind", k)
		}
	}
	if cfg.MaxInFlight < 1 || cfg.MaxInFlight > 65535 {
		p.Add("MaxInFlight", "%d must be between 1 and 65535", cfg.MaxInFlight)
	}
	p.Check(cfg.Duration < 0, "Duration", "must not be negative")
	p.Check(cfg.ProgressInterval < 0, "ProgressInterval", "must not be negative")
	return p.Err()
}

// New validates cfg (the errors are *config.FieldError) and returns a
// fleet; nothing is contacted before Run. deps.Registry receives the
// fleet's counters (nil: not registered).
func New(cfg Config, deps service.Deps) (*Sim, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("devicesim: %w", err)
	}
	if cfg.ClientIDPrefix == "" {
		cfg.ClientIDPrefix = fmt.Sprintf("iotpipe-sim-%x-", time.Now().UnixNano()&0xffffff)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	u, _ := url.Parse(cfg.URL)
	s := &Sim{cfg: cfg, log: deps.Logger()}
	if deps.Registry != nil {
		if err := s.register(deps.Registry); err != nil {
			return nil, fmt.Errorf("devicesim metrics: %w", err)
		}
	}
	for first := 0; first < cfg.Devices; first += cfg.DevicesPerConn {
		n := min(cfg.DevicesPerConn, cfg.Devices-first)
		c := &conn{sim: s, addr: u.Host, host: u.Hostname(), tls: u.Scheme == "mqtts", clientID: cfg.ClientIDPrefix + strconv.Itoa(len(s.conns))}
		c.files = certs.ClientFiles{CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, ServerName: cfg.ServerName}
		if cfg.CertDir != "" {
			id := DeviceID(cfg.DeviceIDPrefix, cfg.FirstDevice+first)
			c.files.CertFile, c.files.KeyFile = filepath.Join(cfg.CertDir, id+".crt"), filepath.Join(cfg.CertDir, id+".key")
		}
		for i := range n {
			d := cfg.FirstDevice + first + i
			id := DeviceID(cfg.DeviceIDPrefix, d)
			c.devs = append(c.devs, device{num: d, id: id, topic: strings.Replace(cfg.TopicTemplate, schemas.DeviceIDPlaceholder, id, 1)})
		}
		c.badTopic = strings.Replace(cfg.TopicTemplate, schemas.DeviceIDPlaceholder, strings.Repeat("x", schemas.MaxDeviceIDLen+1), 1)
		s.conns = append(s.conns, c)
	}
	return s, nil
}

// DeviceID returns the id of device number n.
func DeviceID(prefix string, n int) string {
	return fmt.Sprintf("%s%06d", prefix, n)
}

// Stats returns the counters so far.
func (s *Sim) Stats() Stats {
	return Stats{
		Published: s.published.Load(), Acked: s.acked.Load(), AckedValid: s.ackedValid.Load(),
		AckedInvalid: s.ackedInvalid.Load(), Refused: s.refused.Load(), NoSubscribers: s.noSubs.Load(), Unconfirmed: s.unconfirmed.Load(),
		Connections: s.connections.Load(),
		Duplicates:  s.duplicates.Load(), OutOfOrder: s.outOfOrder.Load(), Late: s.late.Load(),
	}
}

// KindOf returns the kind of device dev's message seq under cfg's
// fraction and kinds: the same answer Run uses.
func (s *Sim) KindOf(dev int, seq int64) Kind {
	h := uint64(dev)*0x9E3779B97F4A7C15 ^ uint64(seq)*0xC2B2AE3D27D4EB4F
	h ^= h >> 29
	h *= 0xBF58476D1CE4E5B9
	h ^= h >> 32
	if s.cfg.InvalidFraction > 0 && float64(h%1_000_000) < s.cfg.InvalidFraction*1_000_000 {
		return s.cfg.InvalidKinds[(h>>20)%uint64(len(s.cfg.InvalidKinds))]
	}
	return s.cfg.ValidKinds[uint64(seq)%uint64(len(s.cfg.ValidKinds))]
}

// Run publishes until every device sent MessagesPerDevice messages and got
// their PUBACKs (or lost them with a connection), or until ctx ends. It
// returns nil then, and an error only when a connection is refused (bad
// credentials, for example).
func (s *Sim) Run(ctx context.Context) error {
	if s.cfg.Duration > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeout(ctx, s.cfg.Duration)
		defer stop()
	}
	if s.cfg.Progress == nil {
		return s.run(ctx)
	}
	return s.runWithProgress(ctx)
}

func (s *Sim) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(s.conns))
	for _, c := range s.conns {
		wg.Go(func() {
			if err := c.run(ctx); err != nil {
				errc <- err
				cancel()
			}
		})
	}
	wg.Wait()
	close(errc)
	return <-errc
}

type device struct {
	num   int
	id    string
	topic string
	seq   int64

	// The previous message, for duplicates.
	lastTS   time.Time
	lastKind Kind
	lastDup  bool
}

type conn struct {
	sim      *Sim
	addr     string
	host     string
	tls      bool
	files    certs.ClientFiles
	clientID string
	devs     []device
	badTopic string
	next     int // index into devs of the next device to publish
	sent     int // messages started on this connection over its lifetime
}

// paceSlack is how early a rate-limited message may go out, so that the
// messages due within it share one wake-up and one write.
const paceSlack = 5 * time.Millisecond

// errRefused marks a CONNACK with an error: retrying will not help.
var errRefused = errors.New("mqtt connection refused")

func (c *conn) total() int {
	if c.sim.cfg.MessagesPerDevice == 0 {
		return math.MaxInt
	}
	return c.sim.cfg.MessagesPerDevice * len(c.devs)
}

// run runs sessions until every message is sent or ctx ends (nil in both
// cases), reconnecting with jittered backoff (50ms … 1s, internal/retry)
// after a failed session; a refused connection ends it with the error.
func (c *conn) run(ctx context.Context) error {
	start := time.Now()
	err := retry.Do(ctx, retry.New(50*time.Millisecond, time.Second), func() error {
		if c.sent >= c.total() {
			return nil
		}
		err := c.session(ctx, start)
		if errors.Is(err, errRefused) {
			return retry.Permanent(err)
		}
		return err
	}, nil)
	if ctx.Err() != nil && !errors.Is(err, errRefused) {
		return nil
	}
	return err
}

type slot struct {
	used bool
	msg  Message
	buf  []byte
}

// session runs one connection until it fails, every message is
// acknowledged, or ctx ends (nil in the last two cases).
func (c *conn) session(ctx context.Context, start time.Time) error {
	cfg := &c.sim.cfg
	d := net.Dialer{Timeout: 5 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	if c.tls {
		tc, err := c.files.Config(c.host)
		if err != nil {
			nc.Close()
			return err
		}
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		tconn := tls.Client(nc, tc)
		err = tconn.HandshakeContext(hctx)
		cancel()
		if err != nil {
			nc.Close()
			if certs.IsNameMismatch(err) || certs.IsUnknownAuthority(err) {
				return fmt.Errorf("%w: %w", errRefused, err)
			}
			return fmt.Errorf("tls handshake: %w", err)
		}
		nc = tconn
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	defer stop()

	cp := &packets.Connect{
		ProtocolName: "MQTT", ProtocolVersion: 5, ClientID: c.clientID, CleanStart: true, KeepAlive: 0,
		Username: cfg.Username, UsernameFlag: cfg.Username != "", Password: []byte(cfg.Password), PasswordFlag: cfg.Password != "",
		Properties: &packets.Properties{},
	}
	if _, err := cp.WriteTo(nc); err != nil {
		return err
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	pkt, err := packets.ReadPacket(br)
	if err != nil {
		return fmt.Errorf("read CONNACK: %w", err)
	}
	_ = nc.SetReadDeadline(time.Time{})
	ca, ok := pkt.Content.(*packets.Connack)
	if !ok {
		return fmt.Errorf("expected CONNACK, got packet type %d", pkt.Type)
	}
	if ca.ReasonCode >= 0x80 {
		return fmt.Errorf("%w: reason code 0x%x for %s", errRefused, ca.ReasonCode, c.clientID)
	}
	c.sim.connections.Add(1)
	maxIn := cfg.MaxInFlight
	if ca.Properties != nil && ca.Properties.ReceiveMaximum != nil && int(*ca.Properties.ReceiveMaximum) < maxIn {
		maxIn = int(*ca.Properties.ReceiveMaximum)
	}

	slots := make([]slot, maxIn+1) // index = packet id
	free := make(chan uint16, maxIn)
	for id := 1; id <= maxIn; id++ {
		free <- uint16(id)
	}
	var mu sync.Mutex // guards slots[*].used against the final accounting
	readErr := make(chan error, 1)
	go func() { readErr <- c.readAcks(br, slots, free, &mu) }()

	gotRead := false
	bw := bufio.NewWriterSize(nc, 64<<10)
	total := c.total()
	var rate float64
	if cfg.Rate > 0 {
		rate = cfg.Rate * float64(len(c.devs))
	}
	werr := func() error {
		var timer, batchTimer *time.Timer
		batch := max(1, maxIn/4)
		ready := make([]uint16, 0, batch)
		for c.sent < total {
			if rate > 0 {
				due := start.Add(time.Duration(float64(c.sent) / rate * float64(time.Second)))
				// Messages due within paceSlack go out now, in one write:
				// one wake-up per batch instead of one per message.
				if wait := time.Until(due); wait > paceSlack {
					if err := bw.Flush(); err != nil {
						return err
					}
					if timer == nil {
						timer = time.NewTimer(wait)
					} else {
						timer.Reset(wait)
					}
					select {
					case <-timer.C:
					case <-ctx.Done():
						return nil
					case err := <-readErr:
						gotRead = true
						return err
					}
				}
			}
			var id uint16
			if len(ready) > 0 {
				id, ready = ready[len(ready)-1], ready[:len(ready)-1]
			} else {
				select {
				case id = <-free:
				default:
					// The window is full: write what is buffered, then
					// wait for a quarter of the window (or 1 ms) so that
					// the next write carries many messages, not one.
					if err := bw.Flush(); err != nil {
						return err
					}
					select {
					case id = <-free:
					case <-ctx.Done():
						return nil
					case err := <-readErr:
						gotRead = true
						return err
					}
					if batchTimer == nil {
						batchTimer = time.NewTimer(time.Millisecond)
					} else {
						batchTimer.Reset(time.Millisecond)
					}
				collect:
					for len(ready) < batch-1 && c.sent+len(ready)+1 < total {
						select {
						case x := <-free:
							ready = append(ready, x)
						case <-batchTimer.C:
							break collect
						}
					}
					batchTimer.Stop()
				}
			}
			dv := &c.devs[c.next]
			c.next = (c.next + 1) % len(c.devs)
			c.sent++
			var (
				seq  int64
				kind Kind
				ts   time.Time
			)
			if dv.seq > 0 && !dv.lastDup && chance(dv.num, dv.seq, saltDuplicate, cfg.DuplicateFraction) {
				seq, kind, ts = dv.seq-1, dv.lastKind, dv.lastTS
				dv.lastDup = true
				c.sim.duplicates.Add(1)
			} else {
				seq = dv.seq
				dv.seq++
				kind = c.sim.KindOf(dv.num, seq)
				ts = cfg.Now()
				if kind.Valid() {
					switch {
					case chance(dv.num, seq, saltLate, cfg.LateFraction):
						ts = ts.Add(-cfg.LateBy)
						c.sim.late.Add(1)
					case chance(dv.num, seq, saltOutOfOrder, cfg.OutOfOrderFraction):
						ts = ts.Add(-cfg.OutOfOrderBy)
						c.sim.outOfOrder.Add(1)
					}
				}
				dv.lastTS, dv.lastKind, dv.lastDup = ts, kind, false
			}
			s := &slots[id]
			s.buf = AppendPayload(s.buf[:0], kind, dv.num, seq, ts)
			topic := dv.topic
			if kind == NoDeviceID {
				topic = c.badTopic
			}
			s.msg = Message{Device: dv.num, DeviceID: dv.id, Seq: seq, Kind: kind, Topic: topic, Payload: s.buf}
			mu.Lock()
			s.used = true
			mu.Unlock()
			writePublish(bw, topic, id, s.buf)
			c.sim.published.Add(1)
		}
		return bw.Flush()
	}()
	if werr == nil && ctx.Err() == nil {
		// Wait for the last PUBACKs.
		for len(free) < maxIn && werr == nil {
			select {
			case werr = <-readErr:
				gotRead = true
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
			if ctx.Err() != nil {
				break
			}
		}
	}
	_ = nc.Close()
	if !gotRead {
		// Wait for the reader. It ends with the error of the connection
		// closed just above, which says nothing; any other error explains
		// a session that ended early better than io.ErrUnexpectedEOF.
		if rerr := <-readErr; werr == nil && c.sent < total && rerr != nil && !errors.Is(rerr, net.ErrClosed) {
			werr = rerr
		}
	}
	for i := range slots {
		if slots[i].used {
			slots[i].used = false
			c.sim.unconfirmed.Add(1)
		}
	}
	switch {
	case ctx.Err() != nil:
		return nil
	case werr == nil && c.sent >= total:
		return nil
	case werr == nil:
		return io.ErrUnexpectedEOF
	}
	return werr
}

// writePublish encodes an MQTT v5 QoS 1 PUBLISH without properties.
func writePublish(bw *bufio.Writer, topic string, id uint16, payload []byte) {
	rem := 2 + len(topic) + 2 + 1 + len(payload)
	_ = bw.WriteByte(0x32)
	for {
		b := byte(rem & 0x7f)
		rem >>= 7
		if rem > 0 {
			b |= 0x80
		}
		_ = bw.WriteByte(b)
		if rem == 0 {
			break
		}
	}
	var hdr [2]byte
	binary.BigEndian.PutUint16(hdr[:], uint16(len(topic)))
	_, _ = bw.Write(hdr[:])
	_, _ = bw.WriteString(topic)
	binary.BigEndian.PutUint16(hdr[:], id)
	_, _ = bw.Write(hdr[:])
	_ = bw.WriteByte(0) // property length
	_, _ = bw.Write(payload)
}

// readAcks reads PUBACKs until the connection fails.
func (c *conn) readAcks(br *bufio.Reader, slots []slot, free chan<- uint16, mu *sync.Mutex) error {
	var body []byte
	for {
		typ, err := br.ReadByte()
		if err != nil {
			return err
		}
		var n, shift int
		for {
			b, err := br.ReadByte()
			if err != nil {
				return err
			}
			n |= int(b&0x7f) << shift
			if b&0x80 == 0 {
				break
			}
			shift += 7
			if shift > 21 {
				return errors.New("malformed remaining length")
			}
		}
		if cap(body) < n {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := io.ReadFull(br, body); err != nil {
			return err
		}
		switch typ >> 4 {
		case 4: // PUBACK
			if n < 2 {
				return errors.New("short PUBACK")
			}
			id := binary.BigEndian.Uint16(body)
			if int(id) >= len(slots) {
				return fmt.Errorf("PUBACK for unknown packet id %d", id)
			}
			rc := byte(0)
			if n >= 3 {
				rc = body[2]
			}
			s := &slots[id]
			mu.Lock()
			used := s.used
			s.used = false
			mu.Unlock()
			if !used {
				return fmt.Errorf("PUBACK for packet id %d not in flight", id)
			}
			switch {
			case rc == 0x10:
				c.sim.noSubs.Add(1)
			case rc < 0x80:
				c.sim.acked.Add(1)
				if s.msg.Kind.Valid() {
					c.sim.ackedValid.Add(1)
				} else {
					c.sim.ackedInvalid.Add(1)
				}
				if f := c.sim.cfg.OnAck; f != nil {
					f(&s.msg)
				}
			default:
				c.sim.refused.Add(1)
			}
			free <- id
		case 13: // PINGRESP
		case 14: // DISCONNECT
			rc := byte(0)
			if n > 0 {
				rc = body[0]
			}
			return fmt.Errorf("broker sent DISCONNECT, reason code 0x%x", rc)
		default:
			return fmt.Errorf("unexpected packet type %d", typ>>4)
		}
	}
}
