//go:build integration

package notify_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/iotpipe/iotpipe/internal/testenv"
)

// smtpServer is a minimal SMTP receiver on a private port: it accepts
// every message and keeps its data.
type smtpServer struct {
	addr string
	mu   sync.Mutex
	msgs []string
	rcpt []string
}

func newSMTPServer(t *testing.T) *smtpServer {
	l := listenPrivate(t, "")
	s := &smtpServer{addr: l.Addr().String()}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *smtpServer) serve(c net.Conn) {
	defer c.Close()
	rd := bufio.NewReader(c)
	say := func(l string) { _, _ = io.WriteString(c, l+"\r\n") }
	say("220 test ESMTP")
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
			say("250-test")
			say("250 8BITMIME")
		case strings.HasPrefix(cmd, "RCPT TO:"):
			s.mu.Lock()
			s.rcpt = append(s.rcpt, strings.TrimSpace(line[8:]))
			s.mu.Unlock()
			say("250 OK")
		case strings.HasPrefix(cmd, "MAIL"), strings.HasPrefix(cmd, "RSET"), strings.HasPrefix(cmd, "NOOP"):
			say("250 OK")
		case cmd == "DATA":
			say("354 go ahead")
			var b strings.Builder
			for {
				l, err := rd.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				b.WriteString(l)
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, b.String())
			s.mu.Unlock()
			say("250 queued")
		case cmd == "QUIT":
			say("221 bye")
			return
		default:
			say("502 not implemented")
		}
	}
}

// ntfy, email and MQTT each get their message, with the fields their
// channel carries, while a webhook recipient that always fails does not
// hold them up, and is given up after its retry budget (state failed).
func TestNotifyChannels(t *testing.T) {
	f := newFixture(t)
	// ntfy: an in-process HTTP server standing in for ntfy.
	type ntfyMsg struct {
		path, title, prio, tags, auth, body string
	}
	var nmu sync.Mutex
	var ntfy []ntfyMsg
	nl := listenPrivate(t, "")
	nsrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		nmu.Lock()
		ntfy = append(ntfy, ntfyMsg{r.URL.Path, r.Header.Get("Title"), r.Header.Get("Priority"), r.Header.Get("Tags"), r.Header.Get("Authorization"), string(b)})
		nmu.Unlock()
	})}
	go func() { _ = nsrv.Serve(nl) }()
	t.Cleanup(func() { _ = nsrv.Close() })
	smtp := newSMTPServer(t)
	broken := newReceiver(t)
	broken.fail = func(string, int) int { return http.StatusServiceUnavailable }

	// MQTT: subscribe on the real broker.
	topic := f.env.MQTTPrefix(t) + "/alerts"
	var mmu sync.Mutex
	var mqttGot []*paho.Publish
	sub := f.env.MQTTClient(t, f.env.MQTTUsername, f.env.MQTTPassword, func(pr paho.PublishReceived) (bool, error) {
		mmu.Lock()
		mqttGot = append(mqttGot, pr.Packet)
		mmu.Unlock()
		return true, nil
	})
	if _, err := sub.Subscribe(testenv.Context(t, 10*time.Second), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	evs := f.alerts(1, "ntfy:boiler-alerts", "email:ops@example.com", "mqtt:"+topic, broken.url("/hook"))
	f.produce(evs)
	p := f.start("IOTPIPE_NTFY_URL=http://"+nl.Addr().String(), "IOTPIPE_NTFY_TOKEN=tk_secret",
		"IOTPIPE_SMTP_ADDR="+smtp.addr, "IOTPIPE_SMTP_FROM=iotpipe@example.com",
		"IOTPIPE_MQTT_URL="+f.env.MQTTURL, "IOTPIPE_MQTT_USERNAME="+f.env.MQTTUsername, "IOTPIPE_MQTT_PASSWORD="+f.env.MQTTPassword,
		"IOTPIPE_MAX_ATTEMPTS=3", "IOTPIPE_RETRY_MIN=100ms", "IOTPIPE_RETRY_MAX=200ms")
	id := evs[0].EventID
	start := time.Now()
	testenv.Eventually(t, 30*time.Second, 50*time.Millisecond, func() error {
		nmu.Lock()
		n := len(ntfy)
		nmu.Unlock()
		smtp.mu.Lock()
		e := len(smtp.msgs)
		smtp.mu.Unlock()
		mmu.Lock()
		m := len(mqttGot)
		mmu.Unlock()
		if n == 0 || e == 0 || m == 0 {
			return fmt.Errorf("ntfy %d, email %d, mqtt %d messages", n, e, m)
		}
		return nil
	})
	t.Logf("ntfy, email and MQTT delivered %s after start while the webhook fails", time.Since(start).Truncate(time.Millisecond))
	nm := ntfy[0]
	if nm.path != "/boiler-alerts" || !strings.Contains(nm.title, "CRITICAL") || nm.prio != "5" || !strings.Contains(nm.tags, "rotating_light") ||
		nm.auth != "Bearer tk_secret" || !strings.Contains(nm.body, "temp 91 > 90") {
		t.Errorf("ntfy message %+v", nm)
	}
	mail := smtp.msgs[0]
	if !strings.Contains(mail, "Message-ID: <"+id+"@iotpipe>") || !strings.Contains(mail, "Subject: [CRITICAL] hot: dev-0000") ||
		smtp.rcpt[0] != "<ops@example.com>" {
		t.Errorf("email %q to %v", mail, smtp.rcpt)
	}
	mq := mqttGot[0]
	if !strings.Contains(string(mq.Payload), `"event_id":"`+id+`"`) || mq.Properties == nil || mq.Properties.User.Get("message-id") != id {
		t.Errorf("mqtt message %s %+v", mq.Payload, mq.Properties)
	}
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		if n := f.count(`SELECT count(*) FROM %s.notifications WHERE state = 'failed' AND channel = 'webhook' AND attempts = 3`); n != 1 {
			return fmt.Errorf("the failing webhook is not marked failed after 3 attempts yet")
		}
		return nil
	})
	if n := f.count(`SELECT count(*) FROM %s.notifications WHERE state = 'delivered'`); n != 3 {
		t.Errorf("%d delivered, want 3 (ntfy, email, mqtt)", n)
	}
	p.WaitLine("undeliverable after the retry budget", 10*time.Second)
	p.StopClean(20 * time.Second)
}
