package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/internal/retry"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/registry"
	"github.com/iotpipe/iotpipe/schemas"
)

// ReasonKafkaRejected is the DLQ reason of a valid reading whose
// telemetry.raw record Kafka refused for good (for example a record too
// large for the topic). It is not (yet) one of the schemas reasons.
const ReasonKafkaRejected schemas.Reason = "kafka_rejected"

// ReasonUnknownDevice is the DLQ reason of a valid reading whose device is
// not in the registry or not active, with Config.Registry.Require.
const ReasonUnknownDevice schemas.Reason = "unknown_device"

// ErrDLQRejected is returned by Run when Kafka refused a dead letter for
// good: the message cannot be stored anywhere, so it is left
// unacknowledged (the broker keeps it) and the bridge stops instead of
// dropping it.
var ErrDLQRejected = errors.New("kafka refused a dead-letter record")

// ErrMissingTopic is returned by Run when a configured Kafka topic does
// not exist (the bridge does not create topics; see `iotpipe init`).
var ErrMissingTopic = errors.New("kafka topic does not exist")

// Stats are the bridge's counters since New, for tests and reports.
type Stats struct {
	Received    int64
	ProducedRaw int64
	ProducedDLQ int64
	Unacked     int64
	Connections int64
	// Redelivered counts messages the broker sent again (DUP flag).
	Redelivered int64
}

// Bridge moves MQTT messages into Kafka. Create it with New and run it
// with Run, once.
type Bridge struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics
	stats *brokerStats // the broker's $SYS statistics (drops)
	tmpl  *schemas.TopicTemplate

	// dec and reading are used only by paho's router goroutine, of which
	// one runs at a time (autopaho waits for a connection's goroutines to
	// end before it reconnects).
	dec     *schemas.Decoder
	reading schemas.Reading

	// rawHeaders are the first headers of every raw record
	// (schemas.RecordHeaders without the MQTT topic); see telemetry.
	rawHeaders []kgo.RecordHeader

	// rt is the route table (see routes.go); routeNames describes it.
	rt         []route
	routeNames string

	// ready is closed (and started set) once Run's checks passed: until
	// then onPublish holds messages back.
	ready   chan struct{}
	started atomic.Bool

	slots chan struct{} // in-flight limit: one token per message taken and not yet acknowledged to the broker
	// flushing is set while a flush started by onPublish runs (see
	// flushIfBusy).
	flushing atomic.Bool
	win      window // the messages holding a slot, in receive order
	// promise (b.produced) and releaseFn (b.release) as func values made
	// once, not per message.
	promise   func(*kgo.Record, error)
	releaseFn func(*inflight)
	pending   sync.WaitGroup
	stopping  atomic.Bool
	stopCh    chan struct{}
	// active is the registry's set of active devices (nil unless
	// Config.Registry.Require).
	active *registry.ActiveSet
	fatal  chan error

	kcl        atomic.Pointer[kgo.Client]
	mqttUp     atomic.Bool
	subscribed atomic.Bool

	received, producedRaw, producedDLQ, unacked, connections atomic.Int64
	redelivered, redeliveredLogged                           atomic.Int64
	acked, maxUnacked                                        atomic.Int64

	// holding is true while onPublish waits for a slot; heldUntil is when
	// it last stopped waiting (UnixNano). See pinger.
	holding   atomic.Bool
	heldUntil atomic.Int64

	// conn is the MQTT connection dialled last: the one whose messages
	// onPublish handles (autopaho waits for a connection's goroutines to
	// end before it dials again). session is paho's session state, with
	// the acknowledgements left to release (see conn.go).
	conn    atomic.Pointer[bufferedConn]
	session ackSession

	hb   *heartbeater // see heartbeat.go
	ping *pinger      // the MQTT keep-alive, which also times the heartbeats' round trips
}

// New validates cfg (the errors are *config.FieldError) and returns a
// bridge; nothing is contacted before Run. deps.Registry receives the
// bridge's metrics (nil: not registered).
func New(cfg Config, deps service.Deps) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bridge config: %w", err)
	}
	cfg.MQTT.Filters = cfg.filters()
	log, reg := deps.Logger(), deps.Registry
	tmpl, err := schemas.ParseTopicTemplate(cfg.TopicTemplate)
	if err != nil {
		return nil, fmt.Errorf("bridge config: TopicTemplate: %w", err)
	}
	opts := cfg.Decode
	opts.Topic = tmpl
	dec, err := schemas.NewDecoder(opts)
	if err != nil {
		return nil, fmt.Errorf("bridge config: Decode: %w", err)
	}
	b := &Bridge{
		cfg:    cfg,
		log:    log,
		m:      newMetrics(reg),
		stats:  newBrokerStats(log, reg),
		tmpl:   tmpl,
		dec:    dec,
		slots:  make(chan struct{}, cfg.MQTT.ReceiveMaximum),
		win:    window{ring: make([]*inflight, cfg.MQTT.ReceiveMaximum)},
		stopCh: make(chan struct{}),
		ready:  make(chan struct{}),
		fatal:  make(chan error, 1),
		hb:     newHeartbeater(reg, cfg.MQTT.ReceiveMaximum),
		// One session state for every connection (autopaho would make
		// one too), so that a resumed session keeps its packet ids.
		session: ackSession{state.NewInMemory()},
	}
	b.promise, b.releaseFn = b.produced, b.release
	b.rawHeaders = schemas.RecordHeaders("")
	b.rt = b.routes()
	b.routeNames = routesSummary(b.rt)
	b.ping = newPinger(b.heldBack)
	return b, nil
}

// Config returns the configuration in use.
func (b *Bridge) Config() Config { return b.cfg }

// Stats returns the counters since New.
func (b *Bridge) Stats() Stats {
	return Stats{
		Received: b.received.Load(), ProducedRaw: b.producedRaw.Load(), ProducedDLQ: b.producedDLQ.Load(),
		Unacked: b.unacked.Load(), Connections: b.connections.Load(), Redelivered: b.redelivered.Load(),
	}
}

// MQTTReady is a readiness check: nil while the MQTT connection is up and
// the subscriptions of this connection are confirmed.
func (b *Bridge) MQTTReady(context.Context) error {
	if !b.mqttUp.Load() {
		return errors.New("not connected to the MQTT broker")
	}
	if !b.subscribed.Load() {
		return errors.New("connected to the MQTT broker, subscription not confirmed")
	}
	return nil
}

// Checks are the readiness checks: mqtt (MQTTReady) and kafka
// (KafkaReady).
func (b *Bridge) Checks() map[string]service.Check {
	return map[string]service.Check{"mqtt": b.MQTTReady, "kafka": b.KafkaReady}
}

// KafkaReady is a readiness check: nil when a Kafka broker answers.
func (b *Bridge) KafkaReady(ctx context.Context) error {
	cl := b.kcl.Load()
	if cl == nil {
		return errors.New("kafka client not started")
	}
	return cl.Ping(ctx)
}

func (b *Bridge) kafkaOpts() []kgo.Opt {
	codec, _ := compressionCodec(b.cfg.Compression)
	return b.cfg.Kafka.Opts(
		// acks=all and idempotence are franz-go's defaults; retries are
		// unlimited and there is no delivery timeout, so an outage means
		// waiting, never loss.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerLinger(b.cfg.Linger),
		kgo.ProducerBatchMaxBytes(int32(b.cfg.BatchMaxBytes)),
		// The in-flight limit (slots) keeps fewer records than this
		// buffered, so Produce never blocks; a DLQ fallback may add one
		// record per slot.
		// Heartbeats add at most one record per partition.
		kgo.MaxBufferedRecords(2*b.cfg.MQTT.ReceiveMaximum+16+maxHeartbeatPartitions),
		kgo.RecordPartitioner(heartbeatPartitioner{kgo.UniformBytesPartitioner(64<<10, true, true, nil)}),
		kgo.RecordDeliveryTimeout(0),
	)
}

// Run connects to Kafka and the MQTT broker (both at once; no message is
// produced before the topics are found) and moves messages until ctx is
// cancelled; then it drains (see Config.ShutdownTimeout) and returns nil.
// It returns an error when a topic is missing or Kafka refuses a dead
// letter (ErrDLQRejected); messages taken meanwhile stay unacknowledged.
func (b *Bridge) Run(ctx context.Context) error {
	kcl, err := kgo.NewClient(b.kafkaOpts()...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer kcl.Close()
	b.kcl.Store(kcl)

	// The MQTT connection is made while the topics (and the registry) are
	// checked, as the connections to Kafka are: messages that arrive
	// meanwhile wait in onPublish until the checks pass (b.ready), and are
	// left unacknowledged for redelivery if they fail.
	var subs sync.WaitGroup
	mqttCtx, mqttCancel := context.WithCancel(context.Background())
	defer mqttCancel()
	cm, err := autopaho.NewConnection(mqttCtx, b.mqttConfig(kcl, mqttCtx, &subs))
	if err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	stopRegistry, runErr := b.prepare(ctx, kcl)
	if runErr == nil && ctx.Err() == nil {
		b.started.Store(true)
		close(b.ready)
		b.log.Info("bridge started", "mqtt", b.cfg.MQTT.URLs, "client_id", b.cfg.MQTT.ClientID,
			"filters", b.cfg.Subscriptions(), "raw", b.cfg.TopicRaw, "dlq", b.cfg.TopicDLQ,
			"receive_maximum", b.cfg.MQTT.ReceiveMaximum, "heartbeat_interval", b.cfg.HeartbeatInterval)
		hbCtx, hbCancel := context.WithCancel(context.Background())
		hbDone := make(chan struct{})
		go func() {
			defer close(hbDone)
			if b.cfg.HeartbeatInterval > 0 {
				b.runHeartbeats(hbCtx, kcl)
			}
		}()
		select {
		case <-ctx.Done():
		case runErr = <-b.fatal:
			b.log.Error("bridge stopping on a fatal error", "err", runErr)
		}
		hbCancel()
		<-hbDone
	}
	b.shutdown(cm, kcl)
	mqttCancel()
	subs.Wait()
	if stopRegistry != nil {
		stopRegistry()
	}
	return runErr
}

// prepare checks the topics and, in strict mode, loads the registry (see
// startRegistry; stop ends what it started). It returns early, with the
// error, on a fatal error of the MQTT connection, and with neither when
// ctx ends.
func (b *Bridge) prepare(ctx context.Context, kcl *kgo.Client) (stop func(), err error) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		err = b.checkTopics(cctx, kcl)
		if err == nil && b.cfg.Registry.Require {
			stop, err = b.startRegistry(cctx)
		}
	}()
	select {
	case <-done:
	case fatal := <-b.fatal:
		b.log.Error("bridge stopping on a fatal error", "err", fatal)
		cancel()
		<-done
		err = fatal
	}
	if err != nil || ctx.Err() != nil {
		if stop != nil {
			stop()
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		return nil, err
	}
	return stop, nil
}

// startRegistry loads the registry's active devices (failing Run when it
// cannot: strict mode must not start open) and keeps them current.
func (b *Bridge) startRegistry(ctx context.Context) (stop func(), err error) {
	rc := b.cfg.Registry
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := registry.Open(lctx, rc.DSN, rc.Schema)
	if err != nil {
		return nil, &config.FieldError{Field: "Registry.DSN", Err: fmt.Errorf("cannot read the device registry (schema {Registry.Schema} %q): %w", rc.Schema, err)}
	}
	set := registry.NewActiveSet(st)
	if err := set.Load(lctx); err != nil {
		st.Close()
		return nil, &config.FieldError{Field: "Registry.DSN", Err: fmt.Errorf("cannot read the device registry: %w", err)}
	}
	b.active = set
	b.log.Info("registry: strict mode, readings of unregistered or inactive devices go to the DLQ", "active_devices", set.Len(), "schema", rc.Schema)
	wctx, wcancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		set.Watch(wctx, rc.DSN, rc.Refresh, b.log)
	}()
	return func() { wcancel(); <-done; st.Close() }, nil
}

// shutdown is the two-phase stop: stop taking messages, wait for the
// records in flight and their acknowledgements (soft), then disconnect
// (hard, at ShutdownTimeout at the latest).
func (b *Bridge) shutdown(cm *autopaho.ConnectionManager, kcl *kgo.Client) {
	start := time.Now()
	b.stopping.Store(true)
	close(b.stopCh)
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.ShutdownTimeout)
	defer cancel()

	drained := make(chan struct{})
	go func() { b.pending.Wait(); close(drained) }()
	select {
	case <-drained:
		// The released PUBACKs are in the connection's buffer: closing
		// it (Disconnect) writes them out before the DISCONNECT.
	case <-ctx.Done():
		b.log.Warn("shutdown timeout: leaving in-flight messages unacknowledged for redelivery",
			"in_flight", len(b.slots), "timeout", b.cfg.ShutdownTimeout)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer dcancel()
	if err := cm.Disconnect(dctx); err != nil {
		b.log.Warn("mqtt disconnect", "err", err)
	}
	b.log.Info("bridge stopped", "drain", time.Since(start).Round(time.Millisecond),
		"received", b.received.Load(), "raw", b.producedRaw.Load(), "dlq", b.producedDLQ.Load(),
		"unacknowledged", b.unacked.Load(), "max_in_flight", b.maxUnacked.Load())
}

// checkTopics waits until Kafka answers, then checks that both topics
// exist; it retries with jittered backoff (100ms … 5s, internal/retry) and
// gives up on a topic still missing after 10 s.
func (b *Bridge) checkTopics(ctx context.Context, kcl *kgo.Client) error {
	adm := kadm.NewClient(kcl)
	start := time.Now()
	return retry.Do(ctx, retry.New(100*time.Millisecond, 5*time.Second), func() error {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		topics := []string{b.cfg.TopicRaw, b.cfg.TopicDLQ}
		if b.cfg.TopicShadow != "" {
			topics = append(topics, b.cfg.TopicShadow)
		}
		td, err := adm.ListTopics(tctx, topics...)
		cancel()
		if kafkax.IsSecurity(err) {
			return retry.Permanent(fmt.Errorf("describe topics %s and %s (the bridge writes to both): %w", b.cfg.TopicRaw, b.cfg.TopicDLQ, err))
		}
		if err != nil {
			return err
		}
		for _, t := range topics {
			d, ok := td[t]
			switch {
			case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
				// A topic created a moment ago may not be in the
				// metadata yet: give it a few seconds.
				if time.Since(start) > 10*time.Second {
					return retry.Permanent(fmt.Errorf("%w: %s (create it with `iotpipe init`)", ErrMissingTopic, t))
				}
				err = fmt.Errorf("%w: %s", ErrMissingTopic, t)
			case kafkax.IsAuthorization(d.Err):
				return retry.Permanent(fmt.Errorf("write (produce) to topic %s: %w", t, d.Err))
			case d.Err != nil:
				err = fmt.Errorf("topic %s: %w", t, d.Err)
			}
		}
		return err
	}, func(_ int, err error, _ time.Duration) {
		b.log.Warn("kafka not reachable yet; waiting", "brokers", b.cfg.Kafka.Brokers, "err", err)
	})
}

func (b *Bridge) mqttConfig(kcl *kgo.Client, ctx context.Context, subs *sync.WaitGroup) autopaho.ClientConfig {
	mc := b.cfg.MQTT
	urls := make([]*url.URL, 0, len(mc.URLs))
	for _, s := range mc.URLs {
		u, _ := parseBrokerURL(s)
		urls = append(urls, u)
	}
	expiry := uint32(mc.SessionExpiry / time.Second)
	recvMax := uint16(mc.ReceiveMaximum)
	cfg := autopaho.ClientConfig{
		ServerUrls:                    urls,
		KeepAlive:                     uint16(mc.KeepAlive / time.Second),
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         expiry,
		ConnectTimeout:                mc.ConnectTimeout,
		ReconnectBackoff:              autopaho.NewExponentialBackoff(mc.ReconnectMin, mc.ReconnectMax, 2*mc.ReconnectMin, 1.5),
		ConnectUsername:               mc.Username,
		ConnectPassword:               []byte(mc.Password),
		AttemptConnection:             b.dial,
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			cp.Properties.SessionExpiryInterval = &expiry
			cp.Properties.ReceiveMaximum = &recvMax
			return cp, nil
		},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, ca *paho.Connack) {
			b.mqttUp.Store(true)
			b.hb.stall() // a resumed session delivers its queue first
			b.m.connected.Set(1)
			b.m.connections.Inc()
			n := b.connections.Add(1)
			b.log.Info("mqtt connected", "session_present", ca.SessionPresent, "connection", n)
			subs.Add(1)
			go func() { // OnConnectionUp must not block
				defer subs.Done()
				b.subscribe(ctx, cm, ca.SessionPresent)
				sctx, cancel := context.WithTimeout(ctx, b.cfg.MQTT.ConnectTimeout)
				defer cancel()
				b.stats.subscribe(sctx, cm)
			}()
		},
		OnConnectionDown: func() bool {
			b.mqttUp.Store(false)
			b.hb.stall()
			b.subscribed.Store(false)
			b.m.connected.Set(0)
			b.log.Warn("mqtt connection lost; reconnecting")
			return true
		},
		OnConnectError: func(err error) {
			b.m.connectErrors.Inc()
			// A broker certificate that does not hold the expected name or
			// does not chain to the CA file is a setting to fix, not an
			// outage to wait out: stop, naming the setting.
			var fatal error
			switch {
			case certs.IsNameMismatch(err):
				fatal = &config.FieldError{Field: "MQTT.ServerName", Err: fmt.Errorf("the broker's certificate does not hold the name the bridge expects (%q; {MQTT.ServerName} or the URL's host): %w", mc.tlsFiles().ServerName, err)}
			case certs.IsUnknownAuthority(err):
				fatal = &config.FieldError{Field: "MQTT.CAFile", Err: fmt.Errorf("the broker's certificate is not signed by a CA in %q: %w", mc.CAFile, err)}
			}
			if fatal != nil {
				select {
				case b.fatal <- fatal:
				default:
				}
				b.log.Error("mqtt connect refused: the broker's certificate is not the one configured", "err", err)
				return
			}
			b.log.Warn("mqtt connect failed", "err", err)
		},
		ClientConfig: paho.ClientConfig{
			ClientID: mc.ClientID,
			// Automatic acknowledgements, which ackSession turns into
			// nothing: release writes the PUBACKs (see conn.go).
			Session:     b.session,
			PingHandler: b.ping,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){
				func(pr paho.PublishReceived) (bool, error) { return b.onPublish(kcl, pr) },
			},
			OnClientError: func(err error) { b.log.Warn("mqtt client error", "err", err) },
			OnServerDisconnect: func(d *paho.Disconnect) {
				b.log.Warn("mqtt broker disconnected us", "reason_code", d.ReasonCode)
			},
		},
	}
	return cfg
}

// dial connects to u, over TLS for mqtts:// (the CA and client files
// read again for this connection, so rotated files take effect), and
// buffers the connection.
func (b *Bridge) dial(ctx context.Context, cfg autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
	d := net.Dialer{Timeout: cfg.ConnectTimeout}
	var conn net.Conn
	raw, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	conn = raw
	if u.Scheme == "mqtts" {
		tc, err := b.cfg.MQTT.tlsFiles().Config(u.Hostname())
		if err != nil {
			raw.Close()
			return nil, err
		}
		hctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
		defer cancel()
		tconn := tls.Client(raw, tc)
		if err := tconn.HandshakeContext(hctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", u.Host, err)
		}
		conn = tconn
	}
	c := newBufferedConn(conn, b.cfg.MQTT.AckInterval)
	b.conn.Store(c)
	return c, nil
}

// subscribe subscribes to the configured filters and, on a resumed
// session, then removes the stale subscriptions that other settings of
// the bridge would have made (see Config.staleFilters): subscribing
// first means no moment without a subscription, at the cost of possible
// duplicates for the messages of that moment.
func (b *Bridge) subscribe(ctx context.Context, cm *autopaho.ConnectionManager, sessionPresent bool) {
	sub := &paho.Subscribe{}
	for _, f := range b.cfg.Subscriptions() {
		sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	sctx, cancel := context.WithTimeout(ctx, b.cfg.MQTT.ConnectTimeout)
	defer cancel()
	sa, err := cm.Subscribe(sctx, sub)
	if err != nil {
		if ctx.Err() == nil {
			b.log.Error("mqtt subscribe failed (the session keeps earlier subscriptions)", "filters", b.cfg.Subscriptions(), "err", err)
		}
		return
	}
	ok := true
	for i, rc := range sa.Reasons {
		if rc >= 0x80 {
			ok = false
			b.log.Error("mqtt subscription refused (the catch-all, MQTT.CatchAll / --mqtt-catch-all, needs read permission on the whole prefix)",
				"filter", sub.Subscriptions[min(i, len(sub.Subscriptions)-1)].Topic, "reason_code", rc)
		}
	}
	if !ok {
		return
	}
	if stale := b.cfg.staleFilters(); sessionPresent && len(stale) > 0 {
		uctx, ucancel := context.WithTimeout(ctx, b.cfg.MQTT.ConnectTimeout)
		ua, err := cm.Unsubscribe(uctx, &paho.Unsubscribe{Topics: stale})
		ucancel()
		switch {
		case err != nil:
			b.log.Warn("mqtt unsubscribe from stale filters failed; messages matching them may arrive twice", "filters", stale, "err", err)
		default:
			for i, rc := range ua.Reasons {
				if rc == 0x00 && i < len(stale) {
					b.log.Info("mqtt removed a stale subscription of the session (another setting made it; it would deliver messages twice)", "filter", stale[i])
				}
			}
		}
	}
	b.subscribed.Store(true)
	b.log.Info("mqtt subscribed", "filters", b.cfg.Subscriptions())
}

// onPublish handles one MQTT message on paho's router goroutine: decode,
// produce, and acknowledge from the produce promise.
func (b *Bridge) onPublish(kcl *kgo.Client, pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	if isSys(p.Topic) { // the broker's statistics (QoS 0): not a device message
		b.stats.handle(p.Topic, p.Payload)
		return true, nil
	}
	if !b.started.Load() {
		// Run's checks have not passed yet: hold back (as for a slot).
		b.holding.Store(true)
		b.hb.stall()
		select {
		case <-b.ready:
		case <-b.stopCh:
		}
		b.heldUntil.Store(time.Now().UnixNano())
		b.holding.Store(false)
	}
	if b.stopping.Load() {
		b.noteUnacked(p)
		return true, nil
	}
	select {
	case b.slots <- struct{}{}:
	default:
		// Every slot is taken: hold back (paho stops reading meanwhile;
		// the pinger knows why no PINGRESP comes).
		b.holding.Store(true)
		b.hb.stall()
		select {
		case b.slots <- struct{}{}:
		case <-b.stopCh:
		}
		b.heldUntil.Store(time.Now().UnixNano())
		b.hb.stall()
		b.holding.Store(false)
		if b.stopping.Load() {
			b.noteUnacked(p)
			return true, nil
		}
	}
	if len(b.slots) >= b.hb.busy {
		b.hb.stall() // the broker may be at its in-flight limit for us: see heartbeat.go
	}
	// Held until this message's Produce call: a heartbeat is either before
	// its receive time or after its record (see heartbeat.go).
	b.hb.mu.Lock()
	defer b.hb.mu.Unlock()
	now := time.Now()
	b.received.Add(1)
	b.m.received.Inc()
	if d := b.received.Load() - b.acked.Load(); d > b.maxUnacked.Load() {
		b.maxUnacked.Store(d)
	}
	if p.Duplicate() {
		b.redelivered.Add(1)
		b.m.redelivered.Inc()
	} else if n := b.redeliveredLogged.Load(); n != b.redelivered.Load() {
		b.redeliveredLogged.Store(b.redelivered.Load())
		b.log.Info("broker redelivered unacknowledged messages", "count", b.redelivered.Load()-n, "max_in_flight", b.maxUnacked.Load())
	}
	b.m.inFlight.Inc()
	b.pending.Add(1)

	// The message's entry in the window holds its record (see inflight).
	e := b.win.push(p, b.conn.Load(), now)
	var rec *kgo.Record
	if rt := match(b.rt, p.Topic); rt != nil {
		var dead bool
		rec, dead = rt.handle(e, now)
		e.isRaw = !dead
	} else {
		rec = b.unexpectedTopic(p, now)
	}
	rec.Context = e
	kcl.Produce(context.Background(), rec, b.promise)
	b.flushIfBusy(kcl)
	return true, nil
}

// flushIfBusy sends the buffered records at once, without waiting for
// Linger, while half or more of the in-flight slots are taken. Linger
// makes a few large produce requests out of a moderate flow (less CPU in
// the bridge and in the broker), but a message holds its slot until its
// record is acknowledged, so at full speed lingering would cap the rate
// at slots / Linger. One flush at a time, in its own goroutine: onPublish
// never waits for it.
func (b *Bridge) flushIfBusy(kcl *kgo.Client) {
	if 2*len(b.slots) < cap(b.slots) || !b.flushing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer b.flushing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), flushWait)
		defer cancel()
		_ = kcl.Flush(ctx) // errors reach each record's promise
	}()
}

// flushWait bounds one flushIfBusy; the records' own delivery timeout
// decides their fate.
const flushWait = 30 * time.Second

// produced is the promise of every message's record (b.promise): the
// record's Context is the message's window entry.
func (b *Bridge) produced(r *kgo.Record, err error) {
	e := r.Context.(*inflight)
	p := e.p
	switch {
	case err == nil:
		if e.isRaw {
			b.producedRaw.Add(1)
			b.m.producedRaw.Inc()
		} else {
			b.producedDLQ.Add(1)
			b.m.producedDLQ.Inc()
		}
		b.acked.Add(1)
		e.ack = p.QoS > 0
		b.m.produceLatency.Observe(time.Since(e.now).Seconds())
	case errors.Is(err, kgo.ErrClientClosed) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		b.noteUnacked(p)
	case e.isRaw:
		// Kafka refused the reading for good (isRaw: the record is a
		// route's output, not a dead letter): keep it in the DLQ.
		b.m.produceErrors.WithLabelValues("raw").Inc()
		b.log.Error("kafka refused a raw record; sending it to the DLQ", "mqtt_topic", p.Topic, "err", err)
		e.isRaw = false
		dl := b.deadLetter(p, &schemas.RejectError{Reason: ReasonKafkaRejected, Detail: err.Error()}, e.now)
		dl.Context = e
		b.kcl.Load().Produce(context.Background(), dl, b.promise)
		return
	default:
		b.m.produceErrors.WithLabelValues("dlq").Inc()
		b.noteUnacked(p)
		select {
		case b.fatal <- fmt.Errorf("%w (topic %s, mqtt topic %q): %w", ErrDLQRejected, b.cfg.TopicDLQ, p.Topic, err):
		default:
		}
	}
	b.win.complete(e, b.releaseFn)
}

// release ends one message's stay in the in-flight window: its PUBACK
// (if any) is written to the connection that delivered it, in receive
// order, and its slot freed.
func (b *Bridge) release(e *inflight) {
	if e.ack && e.conn != nil {
		// An error here means the connection that delivered the message
		// is gone; the broker redelivers it.
		switch e.p.QoS {
		case 1:
			_ = e.conn.puback(e.p.PacketID)
		case 2:
			if b.conn.Load() == e.conn && e.conn.writableErr() == nil {
				_ = b.session.ackLater(e.p.Packet())
			}
		}
	}
	b.m.inFlight.Dec()
	<-b.slots
	b.pending.Done()
}

// heldBack is when the bridge last held back reading for want of an
// in-flight slot: now while it does, the zero time if never.
func (b *Bridge) heldBack() time.Time {
	if b.holding.Load() {
		return time.Now()
	}
	if n := b.heldUntil.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

func (b *Bridge) noteUnacked(p *paho.Publish) {
	if p.QoS > 0 {
		b.unacked.Add(1)
		b.m.unacked.Inc()
	}
}

// deadLetter builds the DLQ record of a rejected message and counts it.
func (b *Bridge) deadLetter(p *paho.Publish, err error, now time.Time) *kgo.Record {
	reason, ok := schemas.ReasonOf(err)
	if !ok {
		reason = schemas.ReasonMalformedJSON
	}
	b.m.reject(reason)
	dl := schemas.DeadLetter{
		Value:           p.Payload,
		Reason:          reason,
		Error:           err.Error(),
		Stage:           schemas.StageBridge,
		SourceMQTTTopic: p.Topic,
		SourcePartition: -1,
		SourceOffset:    -1,
		Time:            now.UTC().Truncate(time.Microsecond),
	}
	if id, ok := b.tmpl.DeviceID(p.Topic); ok {
		dl.Key = []byte(id)
	}
	if n := len(dl.Value); n > b.cfg.DLQMaxValueBytes {
		dl.Value = dl.Value[:b.cfg.DLQMaxValueBytes]
		dl.Error = fmt.Sprintf("%s (value cut to its first %d of %d bytes)", dl.Error, b.cfg.DLQMaxValueBytes, n)
	}
	rec := dl.Record()
	rec.Topic = b.cfg.TopicDLQ
	return rec
}
