package notify

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/schemas"
)

// message is what one delivery sends: one event, or a digest of several.
type message struct {
	// ID is the event id for one event, "d-" + a hash of the sorted event
	// ids for a digest: the same content always has the same id.
	ID       string
	EventIDs []string
	JSON     []byte // webhook and MQTT body
	Title    string // ntfy title, email subject
	Text     string // ntfy and email body
	Priority int    // ntfy priority 1-5
	Tags     []string
}

// webhookBody is the JSON of a message (Standard Webhooks payload shape:
// type, timestamp, data).
type webhookBody struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      any       `json:"data"`
}

// digestData is the data of a digest.
type digestData struct {
	Summary  string           `json:"summary"`
	Firing   int              `json:"firing"`
	Resolved int              `json:"resolved"`
	Devices  int              `json:"devices"`
	Events   []*schemas.Alert `json:"events"`
}

var priority = map[string]int{"critical": 5, "warning": 4, "info": 3}

// single is the message of one event.
func single(a *schemas.Alert) *message {
	m := &message{ID: a.EventID, EventIDs: []string{a.EventID}, Text: a.Message}
	state := strings.ToLower(string(a.State))
	m.JSON, _ = json.Marshal(webhookBody{Type: "alert." + state, Timestamp: a.EventTime.UTC(), Data: a})
	if a.State == schemas.AlertFiring {
		m.Title = fmt.Sprintf("[%s] %s: %s", strings.ToUpper(a.Severity), a.RuleID, a.DeviceID)
		m.Priority = priority[a.Severity]
		m.Tags = []string{"rotating_light", a.Severity, a.RuleID}
	} else {
		m.Title = fmt.Sprintf("[RESOLVED] %s: %s", a.RuleID, a.DeviceID)
		m.Priority = 3
		m.Tags = []string{"white_check_mark", a.RuleID}
	}
	return m
}

// digest groups events (at least two) into one message.
func digest(evs []*schemas.Alert) *message {
	ids := make([]string, len(evs))
	for i, a := range evs {
		ids[i] = a.EventID
	}
	sorted := append([]string(nil), ids...)
	sort.Strings(sorted)
	h := sha256.Sum256([]byte(strings.Join(sorted, "\n")))
	d := digestData{Events: evs}
	firingDev, allDev, ruleSet := map[string]bool{}, map[string]bool{}, map[string]bool{}
	var latest time.Time
	top := 0
	for _, a := range evs {
		allDev[a.DeviceID] = true
		ruleSet[a.RuleID] = true
		if a.EventTime.After(latest) {
			latest = a.EventTime
		}
		if a.State == schemas.AlertFiring {
			d.Firing++
			firingDev[a.DeviceID] = true
			top = max(top, priority[a.Severity])
		} else {
			d.Resolved++
		}
	}
	d.Devices = len(allDev)
	ruleNames := make([]string, 0, len(ruleSet))
	for r := range ruleSet {
		ruleNames = append(ruleNames, r)
	}
	sort.Strings(ruleNames)
	var parts []string
	if d.Firing > 0 {
		parts = append(parts, fmt.Sprintf("%d devices over threshold", len(firingDev)))
	}
	if d.Resolved > 0 {
		parts = append(parts, fmt.Sprintf("%d resolved", d.Resolved))
	}
	d.Summary = strings.Join(parts, ", ") + " (" + strings.Join(ruleNames, ", ") + ")"
	m := &message{ID: "d-" + hex.EncodeToString(h[:16]), EventIDs: ids, Title: d.Summary, Priority: max(top, 3),
		Tags: []string{"bell", "digest"}}
	var b strings.Builder
	b.WriteString(d.Summary)
	b.WriteString("\n")
	for i, a := range evs {
		if i == 50 {
			fmt.Fprintf(&b, "... and %d more\n", len(evs)-50)
			break
		}
		fmt.Fprintf(&b, "%s %s\n", a.State, a.Message)
	}
	m.Text = b.String()
	m.JSON, _ = json.Marshal(webhookBody{Type: "alert.digest", Timestamp: latest.UTC(), Data: d})
	return m
}
