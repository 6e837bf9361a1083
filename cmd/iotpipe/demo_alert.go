package main

// The demo's alert path: a threshold rule (temperature spikes of the
// simulated fleet cross it), iotpipe alert, iotpipe notify and a local
// webhook receiver. The demo prints each alert event of telemetry.alerts
// as it is committed (read_committed) and each notification the receiver
// gets, after checking its Standard Webhooks signature.

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/alert"
	"github.com/iotpipe/iotpipe/alerting/rules"
	"github.com/iotpipe/iotpipe/internal/kafkax"
	"github.com/iotpipe/iotpipe/notify"
	"github.com/iotpipe/iotpipe/schemas"
)

// demoRuleID is the demo's alert rule: the simulator's temperature spikes
// (about one reading in a thousand, +6..+18 °C) cross it, and the next
// reading resolves it.
const demoRuleID = "demo-temperature-spike"

// The demo's alert and notify settings (docker-compose.yml sets the same:
// DemoStageSettings).
const (
	demoAlertCommitInterval = 200 * time.Millisecond
	demoNotifyGroupWait     = time.Second
)

// startAlerts starts the receiver, the rule, the alert stage and notify,
// and the followers that print events and notifications (stopped when ctx
// ends, waited for through wg). Without the database settings it needs it
// says so and does nothing.
func (d *demoRun) startAlerts(ctx context.Context, wg *sync.WaitGroup) error {
	o, w := d.o, d.env.Stdout
	getenv := d.env.Getenv
	if o.tls.registryDSN == "" || o.readerDSN == "" || getenv("IOTPIPE_PG_WRITER_DSN") == "" {
		fmt.Fprintln(w, "demo: alerts skipped: they need --pg-registry-dsn (IOTPIPE_PG_REGISTRY_DSN, to store the rule), --pg-reader-dsn (IOTPIPE_PG_READER_DSN) and IOTPIPE_PG_WRITER_DSN (notify)")
		return nil
	}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return err
	}
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key[:])
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("the demo's webhook receiver: %w", err)
	}
	hook := "http://" + ln.Addr().String() + "/alerts"
	srv := &http.Server{Handler: demoReceiver(key[:], w), ReadHeaderTimeout: 5 * time.Second}
	wg.Add(2)
	go func() { defer wg.Done(); _ = srv.Serve(ln) }()
	go func() {
		defer wg.Done()
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	if err := demoRule(ctx, o.tls.registryDSN, o.pgSchema, hook, o.alertThreshold); err != nil {
		return fmt.Errorf("the demo's alert rule: %w", err)
	}
	gp := o.groupPrefix
	if _, err := d.start("alert", "alert", "--http-port-offset", "0", "--http-addr", "127.0.0.1:0", "--group", gp+"-alert",
		"--instance-id", gp+"-alert-1", "--pg-schema", o.pgSchema, "--commit-interval", demoAlertCommitInterval.String()); err != nil {
		return err
	}
	if _, err := d.start("notify", "notify", "--http-port-offset", "0", "--http-addr", "127.0.0.1:0", "--group", gp+"-notify",
		"--instance-id", gp+"-notify-1", "--pg-schema", o.pgSchema, "--webhook-secret", secret, "--group-wait", demoNotifyGroupWait.String()); err != nil {
		return err
	}
	kc := demoAdminKafka(getenv)
	cl, err := kgo.NewClient(kc.Opts(kgo.ConsumeTopics(demoAlertsTopic(getenv)),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(time.Now().UnixMilli())))...)
	if err != nil {
		return fmt.Errorf("the demo's alerts follower: %w", err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cl.Close()
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(func(r *kgo.Record) {
				a, err := schemas.DecodeAlert(r.Value)
				if err != nil {
					fmt.Fprintf(w, "demo: alert record that does not decode at offset %d: %v\n", r.Offset, err)
					return
				}
				fmt.Fprintf(w, "demo: alert %-8s %s (event %s)\n", a.State, a.Message, a.EventID)
			})
		}
	}()
	fmt.Fprintf(w, "demo: alerts: rule %s (temperature > %g °C, resolves at or below %g °C) → iotpipe alert → %s → iotpipe notify → webhook %s; rules: iotpipe alerts rules list --pg-schema %s\n",
		demoRuleID, o.alertThreshold, o.alertThreshold-3, demoAlertsTopic(getenv), hook, o.pgSchema)
	return nil
}

// demoRule stores the demo's rule, or brings it up to date (the receiver's
// address changes with every run).
func demoRule(ctx context.Context, dsn, schema, hook string, threshold float64) error {
	s, err := rules.Open(ctx, dsn, schema)
	if err != nil {
		return err
	}
	defer s.Close()
	r := rules.Rule{ID: demoRuleID, Description: "iotpipe demo: a temperature spike", Metric: "temperature",
		Operator: rules.GT, Trigger: threshold, Clear: threshold - 3, Recipients: []string{"webhook:" + hook}, Enabled: true}
	r.Normalize()
	cur, err := s.Get(ctx, demoRuleID)
	if errors.Is(err, rules.ErrNotFound) {
		_, err = s.Create(ctx, r)
		return err
	}
	if err != nil {
		return err
	}
	_, err = s.Update(ctx, r, cur.Version)
	return err
}

// demoReceiver prints each notification after checking its Standard
// Webhooks signature; a bad signature gets 401 (and is printed too).
func demoReceiver(key []byte, w io.Writer) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		id := req.Header.Get(notify.HeaderWebhookID)
		sec, _ := strconv.ParseInt(req.Header.Get(notify.HeaderWebhookTimestamp), 10, 64)
		want := notify.Sign(key, id, time.Unix(sec, 0), body)
		ok := false
		for _, sig := range strings.Fields(req.Header.Get(notify.HeaderWebhookSignature)) {
			ok = ok || hmac.Equal([]byte(sig), []byte(want))
		}
		mu.Lock()
		defer mu.Unlock()
		if !ok {
			fmt.Fprintf(w, "demo: webhook received with a bad signature (id %s): refused\n", id)
			http.Error(rw, "bad signature", http.StatusUnauthorized)
			return
		}
		var m struct {
			Type string `json:"type"`
			Data struct {
				Summary string `json:"summary"`
				Message string `json:"message"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &m)
		what := m.Data.Message
		if m.Data.Summary != "" {
			what = m.Data.Summary
		}
		fmt.Fprintf(w, "demo: notification received: webhook %s, signature verified, %s: %s\n", id, m.Type, what)
		rw.WriteHeader(http.StatusNoContent)
	})
}

// demoAdminKafka is the Kafka connection of the demo process itself (the
// admin's, from IOTPIPE_KAFKA_*), to follow the alerts topic.
func demoAdminKafka(getenv func(string) string) kafkax.Config {
	c := kafkax.DefaultConfig("iotpipe-demo")
	if b := getenv("IOTPIPE_KAFKA_BROKERS"); b != "" {
		c.Brokers = kafkax.ParseBrokers(b)
	}
	c.TLS.Enabled = getenv("IOTPIPE_KAFKA_TLS") == "true"
	c.TLS.CAFile = getenv("IOTPIPE_KAFKA_CA_FILE")
	if m := getenv("IOTPIPE_KAFKA_SASL_MECHANISM"); m != "" {
		c.SASL.Mechanism = m
	}
	c.SASL.Username, c.SASL.Password = getenv("IOTPIPE_KAFKA_SASL_USERNAME"), getenv("IOTPIPE_KAFKA_SASL_PASSWORD")
	return c
}

func demoAlertsTopic(getenv func(string) string) string {
	if t := getenv("IOTPIPE_TOPIC_ALERTS"); t != "" {
		return t
	}
	return alert.DefaultTopicAlerts
}
