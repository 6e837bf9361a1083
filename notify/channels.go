package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/smtp"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/iotpipe/iotpipe/alerting/rules"
)

// Standard Webhooks headers.
const (
	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
)

// Sign returns the Standard Webhooks v1 signature of a message:
// "v1," + base64(HMAC-SHA256(key, id + "." + unix seconds + "." + body)).
func Sign(key []byte, id string, ts time.Time, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(strconv.FormatInt(ts.Unix(), 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// ErrNotConfigured: the recipient's channel has no settings (no webhook
// secret, SMTP server or MQTT broker); the attempt fails and is retried
// like any other, so a fixed configuration delivers it.
var ErrNotConfigured = errors.New("channel not configured")

// sender delivers one message to one recipient.
type sender interface {
	send(ctx context.Context, rc rules.Recipient, m *message) error
}

// senders are the channels, by name.
type senders struct {
	cfg    *Config
	key    []byte
	client *http.Client
	now    func() time.Time
}

func (s *senders) send(ctx context.Context, rc rules.Recipient, m *message) error {
	switch rc.Channel {
	case rules.Webhook:
		return s.webhook(ctx, rc.Target, m)
	case rules.Ntfy:
		return s.ntfy(ctx, rc.Target, m)
	case rules.Email:
		return s.email(ctx, rc.Target, m)
	case rules.MQTT:
		return s.mqtt(ctx, rc.Target, m)
	}
	return fmt.Errorf("unknown channel %q", rc.Channel)
}

// StatusError is a receiver's HTTP answer other than 2xx.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.Code, e.Body)
}

func (s *senders) post(ctx context.Context, u string, body []byte, h http.Header) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("request %s: %w", u, err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("post: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return &StatusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	return nil
}

// webhook POSTs the message's JSON, signed per Standard Webhooks with
// webhook-id = the message id (the event id for a single event).
func (s *senders) webhook(ctx context.Context, target string, m *message) error {
	if s.key == nil {
		return fmt.Errorf("webhook: no --webhook-secret: %w", ErrNotConfigured)
	}
	ts := s.now()
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(HeaderWebhookID, m.ID)
	h.Set(HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderWebhookSignature, Sign(s.key, m.ID, ts, m.JSON))
	return s.post(ctx, target, m.JSON, h)
}

// ntfy publishes the message to <NtfyURL>/<topic> with title, priority,
// tags and the bearer token.
func (s *senders) ntfy(ctx context.Context, topic string, m *message) error {
	if s.cfg.NtfyURL == "" {
		return fmt.Errorf("ntfy: no --ntfy-url: %w", ErrNotConfigured)
	}
	h := http.Header{}
	h.Set("Title", m.Title)
	h.Set("Priority", strconv.Itoa(m.Priority))
	h.Set("Tags", strings.Join(m.Tags, ","))
	h.Set("X-Message-Id", m.ID)
	if s.cfg.NtfyToken != "" {
		h.Set("Authorization", "Bearer "+s.cfg.NtfyToken)
	}
	return s.post(ctx, strings.TrimRight(s.cfg.NtfyURL, "/")+"/"+url.PathEscape(topic), []byte(m.Text), h)
}

// email sends the message over SMTP (STARTTLS when the server offers it,
// PLAIN auth when a user is set). The Message-ID is derived from the
// message id, so a repeat can be recognised.
func (s *senders) email(ctx context.Context, to string, m *message) error {
	if s.cfg.SMTPAddr == "" {
		return fmt.Errorf("email: no --smtp-addr: %w", ErrNotConfigured)
	}
	host, _, _ := net.SplitHostPort(s.cfg.SMTPAddr)
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@iotpipe>\r\nDate: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		s.cfg.SMTPFrom, to, mimeHeader(m.Title), m.ID, s.now().UTC().Format(time.RFC1123Z))
	b.WriteString(strings.ReplaceAll(m.Text, "\n", "\r\n"))
	b.WriteString("\r\n")
	var auth smtp.Auth
	if s.cfg.SMTPUser != "" {
		auth = smtp.PlainAuth("", s.cfg.SMTPUser, s.cfg.SMTPPassword, host)
	}
	done := make(chan error, 1)
	go func() { done <- smtp.SendMail(s.cfg.SMTPAddr, auth, s.cfg.SMTPFrom, []string{to}, b.Bytes()) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("smtp: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("smtp: %w", ctx.Err())
	}
}

// mimeHeader encodes a header value as RFC 2047 when it is not ASCII.
func mimeHeader(s string) string {
	for _, r := range s {
		if r > 126 || r < 32 {
			return "=?utf-8?b?" + base64.StdEncoding.EncodeToString([]byte(s)) + "?="
		}
	}
	return s
}

// mqtt publishes the message's JSON at QoS 1 on the topic: one connection
// per message (notifications are rare; a broker restart costs nothing).
func (s *senders) mqtt(ctx context.Context, topic string, m *message) error {
	if s.cfg.MQTTURL == "" {
		return fmt.Errorf("mqtt: no --mqtt-url: %w", ErrNotConfigured)
	}
	u, err := url.Parse(s.cfg.MQTTURL)
	if err != nil {
		return fmt.Errorf("mqtt url: %w", err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	cp := &paho.Connect{KeepAlive: 30, ClientID: "iotpipe-notify-" + m.ID[:min(len(m.ID), 16)], CleanStart: true}
	if s.cfg.MQTTUser != "" {
		cp.Username, cp.UsernameFlag = s.cfg.MQTTUser, true
		cp.Password, cp.PasswordFlag = []byte(s.cfg.MQTTPassword), true
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("mqtt connect: %w", err)
	}
	if ca.ReasonCode != 0 {
		_ = conn.Close()
		return fmt.Errorf("mqtt connect refused: reason %d", ca.ReasonCode)
	}
	defer func() { _ = c.Disconnect(&paho.Disconnect{ReasonCode: 0}) }()
	pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: m.JSON,
		Properties: &paho.PublishProperties{ContentType: "application/json", User: paho.UserProperties{{Key: "message-id", Value: m.ID}}}})
	if err != nil {
		return fmt.Errorf("mqtt publish: %w", err)
	}
	if pr != nil && pr.ReasonCode >= 0x80 {
		return fmt.Errorf("mqtt publish refused: reason %d", pr.ReasonCode)
	}
	return nil
}
