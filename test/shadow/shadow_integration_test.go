//go:build integration

// Package shadow_test runs the device shadow end to end on the real
// services: iotpipe api (HTTPS with a certificate of the project CA, and
// its relay with the iotpipe-api identity), the bridge's shadow route,
// Kafka, the shadow consumer and PostgreSQL, with devices on a private
// Mosquitto (this checkout's ACL) holding their own certificates.
package shadow_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/iotpipe/iotpipe/api"
	"github.com/iotpipe/iotpipe/bridge"
	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/registrytest"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/shadowconsumer"
)

type stack struct {
	t      testing.TB
	base   string
	client *http.Client
	tok    map[api.Role]string
	m      testenv.MQTTTLS
	pool   *pgxpool.Pool
	schema string
}

func run(t testing.TB, name string, s service.Stage) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop", name)
		}
	})
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func newStack(t testing.TB) *stack {
	t.Helper()
	env := testenv.Load(t)
	p := testenv.StartPrivate(t, "mqtt")
	m := p.MQTTTLS(t)
	schema, dsn := registrytest.Schema(t, env)
	ca, err := certs.Load(m.CADir)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	iss, key, err := ca.IssueClientKey("iotpipe-api", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	apiCrt, apiKey, err := certs.WriteKeyPair(dir, "iotpipe-api", certs.EncodeCert(iss.Cert.Raw), key)
	if err != nil {
		t.Fatal(err)
	}
	siss, skey, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvCrt, srvKey, err := certs.WriteKeyPair(dir, "server", certs.EncodeCert(siss.Cert.Raw), skey)
	if err != nil {
		t.Fatal(err)
	}

	// Kafka topic of shadow requests, and the bridge's own.
	shadowTopic := env.Topic(t, 3, nil)
	raw, dlq := env.Topic(t, 1, nil), env.Topic(t, 1, nil)

	// iotpipe api: HTTPS, the relay as iotpipe-api.
	listen := freeAddr(t)
	ac := api.DefaultConfig()
	ac.Listen, ac.TLSCertFile, ac.TLSKeyFile = listen, srvCrt, srvKey
	ac.DSN, ac.Schema, ac.CADir = dsn, schema, m.CADir
	ac.RatePerToken = 0
	ac.Relay.URLs, ac.Relay.CAFile, ac.Relay.CertFile, ac.Relay.KeyFile = []string{m.URL}, m.CAFile, apiCrt, apiKey
	ac.Relay.ClientID = testenv.Name(t, "api")
	a, err := api.New(ac, service.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	run(t, "api", a)

	// The bridge, with its shadow route.
	bc := bridge.DefaultConfig()
	bc.MQTT.URLs = []string{m.URL}
	bc.MQTT.ClientID = testenv.Name(t, "bridge")
	bc.MQTT.CAFile, bc.MQTT.CertFile, bc.MQTT.KeyFile = m.CAFile, m.BridgeCertFile, m.BridgeKeyFile
	bc.MQTT.ShareGroup = testenv.Name(t, "share")
	bc.MQTT.ReconnectMin, bc.MQTT.ReconnectMax = 100*time.Millisecond, time.Second
	bc.Kafka = env.KafkaConfig(t, testenv.Bridge)
	bc.Kafka.ClientID = bc.MQTT.ClientID
	bc.TopicRaw, bc.TopicDLQ, bc.TopicShadow = raw, dlq, shadowTopic
	br, err := bridge.New(bc, service.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	run(t, "bridge", br)

	// The shadow consumer.
	cc := shadowconsumer.DefaultConfig()
	cc.Kafka = env.KafkaConfig(t, testenv.ShadowConsumer)
	cc.Topic, cc.Group, cc.InstanceID = shadowTopic, env.Group(t), ""
	cc.DSN, cc.Schema = dsn, schema
	cc.Limits.MaxBytes = 1024
	sc, err := shadowconsumer.New(cc, service.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	run(t, "shadow consumer", sc)

	pool, err := pgxpool.New(testenv.Context(t, 10*time.Second), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	s := &stack{t: t, base: "https://" + listen, m: m, pool: pool, schema: schema, tok: map[api.Role]string{},
		// Keep-alive connections for every concurrent caller (the
		// benchmark's devices): Go's default keeps 2 idle per host, so
		// the other callers would pay a TLS handshake per request.
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, MaxIdleConnsPerHost: 256}}}
	toks := api.NewTokens(pool, schema)
	for _, r := range []api.Role{api.RoleAdmin, api.RoleOperator, api.RoleViewer} {
		sec, _, err := toks.Create(testenv.Context(t, 10*time.Second), "e2e", r, 0)
		if err != nil {
			t.Fatal(err)
		}
		s.tok[r] = sec
	}
	testenv.Eventually(t, 60*time.Second, 50*time.Millisecond, func() error {
		_, err := s.client.Get(s.base + "/v1/openapi.json")
		return err
	})
	return s
}

func (s *stack) do(method, path string, role api.Role, hdr map[string]string, body string) (int, http.Header, []byte) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.base+path, strings.NewReader(body))
	if role != "" {
		req.Header.Set("Authorization", "Bearer "+s.tok[role])
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

type device struct {
	t    testing.TB
	id   string
	cert tls.Certificate
	s    *stack
	c    *paho.Client
	mu   sync.Mutex
	got  map[string][][]byte
}

func (s *stack) newDevice(id string) *device {
	s.t.Helper()
	code, _, b := s.do("POST", "/v1/devices", api.RoleAdmin, nil, `{"device_id":"`+id+`"}`)
	if code != 201 {
		s.t.Fatalf("create %s: %d %s", id, code, b)
	}
	var c api.Created
	_ = json.Unmarshal(b, &c)
	cert, err := tls.X509KeyPair([]byte(c.Certificate), []byte(c.PrivateKey))
	if err != nil {
		s.t.Fatal(err)
	}
	return &device{t: s.t, id: id, cert: cert, s: s, got: map[string][][]byte{}}
}

// connect connects and subscribes; a SUBSCRIBE that Mosquitto 2.0.11
// never answers (seen under -race) is tried again on a new connection, up
// to three times.
func (d *device) connect() {
	d.t.Helper()
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if err = d.connectOnce(); err == nil {
			c := d.c
			d.t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
			return
		}
		d.t.Logf("device %s: connect/subscribe attempt %d: %v", d.id, attempt, err)
		if d.c != nil {
			_ = d.c.Disconnect(&paho.Disconnect{})
		}
		d.mu.Lock()
		d.got = map[string][][]byte{}
		d.mu.Unlock()
	}
	d.t.Fatalf("device %s: %v", d.id, err)
}

func (d *device) connectOnce() error {
	u, _ := url.Parse(d.s.m.URL)
	pool, _ := certs.LoadPool(d.s.m.CAFile)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", u.Host,
		&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{d.cert}, ServerName: u.Hostname()})
	if err != nil {
		return err
	}
	// paho writes a packet in pieces from more than one goroutine (its
	// acknowledgements, the test's publishes): the connection serialises
	// them, as autopaho's TLS connections do.
	d.c = paho.NewClient(paho.ClientConfig{Conn: packets.NewThreadSafeConn(conn), OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			d.mu.Lock()
			d.got[pr.Packet.Topic] = append(d.got[pr.Packet.Topic], pr.Packet.Payload)
			d.mu.Unlock()
			return true, nil
		}}})
	ctx := testenv.Context(d.t, 30*time.Second)
	if ack, err := d.c.Connect(ctx, &paho.Connect{ClientID: d.id, CleanStart: true, KeepAlive: 30}); err != nil || ack.ReasonCode != 0 {
		return fmt.Errorf("connect: %v", err)
	}
	sa, err := d.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "devices/" + d.id + "/config", QoS: 1}, {Topic: "devices/" + d.id + "/shadow/update/+", QoS: 1},
		{Topic: "devices/" + d.id + "/shadow/get/accepted", QoS: 1}}})
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	for _, r := range sa.Reasons {
		if r >= 0x80 {
			return fmt.Errorf("subscribe refused: %v", sa.Reasons)
		}
	}
	return nil
}

// publish returns the PUBACK reason code.
func (d *device) publish(topic, payload string) byte {
	d.t.Helper()
	r, err := d.c.Publish(testenv.Context(d.t, 30*time.Second), &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
	if r != nil {
		return r.ReasonCode
	}
	if err != nil {
		d.t.Fatal(err)
	}
	return 0
}

func (d *device) msgs(suffix string) [][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([][]byte(nil), d.got["devices/"+d.id+suffix]...)
}

func (d *device) waitFor(suffix string, n int) [][]byte {
	d.t.Helper()
	testenv.Eventually(d.t, 60*time.Second, 20*time.Millisecond, func() error {
		if got := len(d.msgs(suffix)); got < n {
			return fmt.Errorf("%s: %d messages on %s, want %d", d.id, got, suffix, n)
		}
		return nil
	})
	return d.msgs(suffix)
}

func field(t testing.TB, b []byte, name string) any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return m[name]
}

func (s *stack) shadowVersion(id string) float64 {
	s.t.Helper()
	code, _, b := s.do("GET", "/v1/devices/"+id+"/shadow", api.RoleViewer, nil, "")
	if code != 200 {
		s.t.Fatalf("GET shadow %s: %d %s", id, code, b)
	}
	return field(s.t, b, "version").(float64)
}

// A device follows its shadow over MQTT: it gets the configuration and
// the delta, reports back through the bridge, Kafka and the shadow
// consumer, and is answered accepted; stale, malformed and oversized
// reports are answered rejected with their reason and change nothing; a
// device cannot write another device's shadow; shadow/get answers with
// the whole shadow.
func TestShadowOverMQTT(t *testing.T) {
	s := newStack(t)
	dev := s.newDevice("e2e-a")
	other := s.newDevice("e2e-b")
	dev.connect()
	other.connect()

	code, _, b := s.do("PUT", "/v1/devices/e2e-a/config", api.RoleOperator, map[string]string{"If-Match": `"0"`}, `{"rate":5,"mode":"eco"}`)
	if code != 200 {
		t.Fatalf("PUT config: %d %s", code, b)
	}
	cfg := dev.waitFor("/config", 1)
	delta := dev.waitFor("/shadow/update/delta", 1)
	if field(t, cfg[0], "version") != 1.0 || field(t, delta[0], "version") != 1.0 {
		t.Fatalf("config %s delta %s", cfg[0], delta[0])
	}

	// A stale report: rejected, nothing applied.
	if rc := dev.publish("devices/e2e-a/shadow/update", `{"state":{"reported":{"config":{"rate":5}}},"version":0,"client_token":"stale"}`); rc != 0 {
		t.Fatalf("PUBACK %#x", rc)
	}
	rej := dev.waitFor("/shadow/update/rejected", 1)
	if field(t, rej[0], "code") != "stale_version" || field(t, rej[0], "client_token") != "stale" {
		t.Fatalf("rejected %s", rej[0])
	}
	// Malformed and too large: rejected with their reasons.
	dev.publish("devices/e2e-a/shadow/update", `{"state":{"reported":`)
	dev.publish("devices/e2e-a/shadow/update", `{"state":{"reported":{"blob":"`+strings.Repeat("x", 1500)+`"}}}`)
	rej = dev.waitFor("/shadow/update/rejected", 3)
	if field(t, rej[1], "code") != "malformed" || field(t, rej[2], "code") != "too_large" {
		t.Fatalf("rejections %s / %s", rej[1], rej[2])
	}
	if v := s.shadowVersion("e2e-a"); v != 1 {
		t.Fatalf("rejected reports moved the version to %v", v)
	}

	// Another device's topic: the broker refuses it (ACL), nothing reaches
	// e2e-a's shadow.
	if rc := other.publish("devices/e2e-a/shadow/update", `{"state":{"reported":{"hacked":true}}}`); rc < 0x80 {
		t.Fatalf("PUBACK %#x for another device's topic, want a refusal (>= 0x80)", rc)
	}

	// The real report: accepted, the version moves on, the delta empties.
	dev.publish("devices/e2e-a/shadow/update", `{"state":{"reported":{"config":{"rate":5,"mode":"eco"}}},"version":1,"client_token":"ok"}`)
	acc := dev.waitFor("/shadow/update/accepted", 1)
	if field(t, acc[0], "version") != 2.0 || field(t, acc[0], "client_token") != "ok" {
		t.Fatalf("accepted %s", acc[0])
	}
	if d := dev.waitFor("/shadow/update/delta", 2); len(d[1]) != 0 {
		t.Fatalf("delta after the report %q, want the empty clearing message", d[1])
	}
	code, _, b = s.do("GET", "/v1/devices/e2e-a/shadow", api.RoleViewer, nil, "")
	var sh struct {
		Version int64
		State   struct{ Reported, Delta map[string]any }
	}
	_ = json.Unmarshal(b, &sh)
	if code != 200 || sh.Version != 2 || len(sh.State.Delta) != 0 || sh.State.Reported["hacked"] != nil {
		t.Fatalf("shadow after the report: %s", b)
	}

	// shadow/get: the whole shadow at the current version.
	dev.publish("devices/e2e-a/shadow/get", `{"client_token":"g1"}`)
	got := dev.waitFor("/shadow/get/accepted", 1)
	if field(t, got[0], "version") != 2.0 || !bytes.Contains(got[0], []byte(`"reported":{"config"`)) {
		t.Fatalf("get/accepted %s", got[0])
	}
	if other.msgs("/shadow/update/accepted") != nil || other.msgs("/shadow/get/accepted") != nil {
		t.Fatal("e2e-b received e2e-a's answers")
	}
}
