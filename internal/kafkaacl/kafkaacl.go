// Package kafkaacl holds the Kafka principals and ACLs of the pipeline:
// one SCRAM user per stage, allowed only what that stage does (see
// docs/SECURITY.md). EnsurePrincipals is idempotent and reports what it
// changed; `iotpipe init --kafka-acls` (internal/setup) and the tests'
// environment (internal/testenv) use it. It depends on internal/kafkax only,
// so that testenv can use it without importing setup (and the schema
// migrations with it).
package kafkaacl

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/iotpipe/iotpipe/internal/kafkax"
)

// Grant allows operations on one Kafka resource (a literal name, or every
// name starting with Name when Prefixed).
type Grant struct {
	Type     kmsg.ACLResourceType
	Name     string
	Prefixed bool
	Ops      []kadm.ACLOperation
}

// String is e.g. "WRITE,DESCRIBE on topic telemetry.raw".
func (g Grant) String() string {
	ops := make([]string, len(g.Ops))
	for i, o := range g.Ops {
		ops[i] = o.String()
	}
	name := g.Name
	if g.Prefixed {
		name += "*"
	}
	return fmt.Sprintf("%s on %s %s", strings.Join(ops, ","), strings.ToLower(strings.ReplaceAll(g.Type.String(), "_", "-")), name)
}

// TopicRead lets a principal consume a topic (READ, DESCRIBE).
func TopicRead(name string) Grant {
	return Grant{Type: kmsg.ACLResourceTypeTopic, Name: name, Ops: []kadm.ACLOperation{kadm.OpRead, kadm.OpDescribe}}
}

// TopicWrite lets a principal produce to a topic (WRITE, DESCRIBE); WRITE
// also allows idempotent produce (KIP-679).
func TopicWrite(name string) Grant {
	return Grant{Type: kmsg.ACLResourceTypeTopic, Name: name, Ops: []kadm.ACLOperation{kadm.OpWrite, kadm.OpDescribe}}
}

// TopicDescribeConfigs lets a principal read a topic's configs.
func TopicDescribeConfigs(name string) Grant {
	return Grant{Type: kmsg.ACLResourceTypeTopic, Name: name, Ops: []kadm.ACLOperation{kadm.OpDescribeConfigs}}
}

// GroupRead lets a principal be a member of a consumer group and commit
// its offsets (READ, DESCRIBE).
func GroupRead(name string) Grant {
	return Grant{Type: kmsg.ACLResourceTypeGroup, Name: name, Ops: []kadm.ACLOperation{kadm.OpRead, kadm.OpDescribe}}
}

// TransactionalIDPrefix lets a principal use every transactional id that
// starts with prefix (WRITE, DESCRIBE).
func TransactionalIDPrefix(prefix string) Grant {
	return Grant{Type: kmsg.ACLResourceTypeTransactionalId, Name: prefix, Prefixed: true, Ops: []kadm.ACLOperation{kadm.OpWrite, kadm.OpDescribe}}
}

// Principal is one stage's Kafka identity: a SCRAM-SHA-512 user and its
// grants.
type Principal struct {
	// Stage names the stage in reports ("bridge").
	Stage string
	// User is the SCRAM user; its ACL principal is User:<User>.
	User string
	// Password is set when the user cannot log in with it (new user, or
	// another password); empty leaves the user's credentials alone.
	Password string
	Grants   []Grant
}

// PipelineNames are the names the stages use: topics, consumer groups and
// the processor's transactional-id prefix.
type PipelineNames struct {
	Raw, Readings, Metrics, DLQ, Changelog    string
	ProcessorGroup, LakeGroup, TimescaleGroup string
	// Alerts and Shadow are the alert events (read by notify and the
	// TimescaleDB sink) and the
	// devices' shadow requests (written by the bridge, read by the shadow
	// consumer); NotifyGroup and ShadowGroup the groups of their readers.
	Alerts, Shadow           string
	NotifyGroup, ShadowGroup string
	// TransactionalIDPrefix starts every processor's transactional id
	// (processor.Config.TransactionalID).
	TransactionalIDPrefix string
	// AlertChangelog, AlertGroup and AlertTransactionalIDPrefix are the
	// alert stage's compacted changelog, consumer group and the start of
	// its transactional ids (alert.Config.TransactionalID).
	AlertChangelog, AlertGroup, AlertTransactionalIDPrefix string
}

// Credentials of one stage's principal.
type Credentials struct{ User, Password string }

// Stage principals, the keys of StagePrincipals' users.
const (
	StageBridge        = "bridge"
	StageProcessor     = "processor"
	StageSinkLake      = "sink-lake"
	StageSinkTimescale = "sink-timescale"
	StageNotify        = "notify"
	StageShadow        = "shadow-consumer"
	StageAlert         = "alert"
)

// Stages lists the stages that have a principal, in pipeline order.
var Stages = []string{StageBridge, StageProcessor, StageSinkLake, StageSinkTimescale, StageAlert, StageNotify, StageShadow}

// StagePrincipals returns each stage's principal with only what it needs:
//   - bridge: write raw and dlq (dead letters, unexpected topics included);
//   - processor: read raw (and its configs: retention) and the changelog;
//     write metrics, readings, dlq and the changelog; its consumer group;
//     its transactional ids;
//   - sink lake and sink timescale: read readings and metrics, their
//     group; write dlq (records that do not decode); sink timescale also
//     reads alerts (into alert_events);
//   - alert: read raw and metrics and its changelog; write alerts and its
//     changelog; its consumer group; its transactional ids;
//   - notify: read alerts, its group; write dlq;
//   - shadow consumer: read the shadow topic, its group;
//   - the bridge also writes the shadow topic (its shadow route).
//
// Stages without credentials in users are left out; a topic named "" or
// "-" (not used) is left out.
func StagePrincipals(n PipelineNames, users map[string]Credentials) []Principal {
	topics := func(mk func(string) Grant, names ...string) []Grant {
		var gs []Grant
		for _, t := range names {
			if t != "" && t != "-" {
				gs = append(gs, mk(t))
			}
		}
		return gs
	}
	groups := func(names ...string) []Grant {
		var gs []Grant
		for _, g := range names {
			if g != "" {
				gs = append(gs, GroupRead(g))
			}
		}
		return gs
	}
	prefixes := func(names ...string) []Grant {
		var gs []Grant
		for _, p := range names {
			if p != "" {
				gs = append(gs, TransactionalIDPrefix(p))
			}
		}
		return gs
	}
	grants := map[string][]Grant{
		StageBridge: topics(TopicWrite, n.Raw, n.DLQ, n.Shadow),
		StageProcessor: slices.Concat(topics(TopicRead, n.Raw, n.Changelog), topics(TopicDescribeConfigs, n.Raw),
			topics(TopicWrite, n.Metrics, n.Readings, n.DLQ, n.Changelog),
			[]Grant{GroupRead(n.ProcessorGroup), TransactionalIDPrefix(n.TransactionalIDPrefix)}),
		StageSinkLake:      slices.Concat(topics(TopicRead, n.Readings, n.Metrics), topics(TopicWrite, n.DLQ), []Grant{GroupRead(n.LakeGroup)}),
		StageSinkTimescale: slices.Concat(topics(TopicRead, n.Readings, n.Metrics, n.Alerts), topics(TopicWrite, n.DLQ), []Grant{GroupRead(n.TimescaleGroup)}),
		StageAlert: slices.Concat(topics(TopicRead, n.Raw, n.Metrics, n.AlertChangelog), topics(TopicWrite, n.Alerts, n.AlertChangelog),
			groups(n.AlertGroup), prefixes(n.AlertTransactionalIDPrefix)),
		StageNotify: slices.Concat(topics(TopicRead, n.Alerts), topics(TopicWrite, n.DLQ), groups(n.NotifyGroup)),
		StageShadow: slices.Concat(topics(TopicRead, n.Shadow), groups(n.ShadowGroup)),
	}
	var out []Principal
	for _, st := range Stages {
		c, ok := users[st]
		if !ok || c.User == "" {
			continue
		}
		out = append(out, Principal{Stage: st, User: c.User, Password: c.Password, Grants: grants[st]})
	}
	return out
}

// PrincipalResult says what EnsurePrincipals did for one principal.
type PrincipalResult struct {
	Stage, User string
	// Credentials is "created", "password set" or "unchanged" (the user
	// logs in with the given password, or none was given).
	Credentials string
	// Created lists the grants that were missing and were created.
	Created []string
}

// Changed reports whether anything was created or set.
func (r PrincipalResult) Changed() bool { return r.Credentials != "unchanged" || len(r.Created) > 0 }

// EnsurePrincipals creates each principal's SCRAM-SHA-512 user (or sets
// its password when it cannot log in with the given one) through adm, and
// creates the ACLs it lacks. kc is the admin's connection, used to try
// each stage's login. It never deletes an ACL or a user.
func EnsurePrincipals(ctx context.Context, adm *kadm.Client, kc kafkax.Config, ps []Principal) ([]PrincipalResult, error) {
	var out []PrincipalResult
	for _, p := range ps {
		res := PrincipalResult{Stage: p.Stage, User: p.User, Credentials: "unchanged"}
		if p.Password != "" {
			state, err := ensureUser(ctx, adm, kc, p)
			if err != nil {
				return out, fmt.Errorf("SCRAM user %s (%s): %w", p.User, p.Stage, err)
			}
			res.Credentials = state
		}
		for _, g := range p.Grants {
			missing, err := missingOps(ctx, adm, p.User, g)
			if err != nil {
				return out, fmt.Errorf("ACLs of %s (%s): %w", p.User, p.Stage, err)
			}
			if len(missing) == 0 {
				continue
			}
			g.Ops = missing
			rs, err := adm.CreateACLs(ctx, builder(p.User, g))
			if err == nil {
				for _, r := range rs {
					if r.Err != nil {
						err = fmt.Errorf("%w: %s", r.Err, r.ErrMessage)
						break
					}
				}
			}
			if err != nil {
				return out, fmt.Errorf("create ACL %s for %s (%s): %w", g, p.User, p.Stage, err)
			}
			res.Created = append(res.Created, g.String())
		}
		out = append(out, res)
	}
	return out, nil
}

func builder(user string, g Grant) *kadm.ACLBuilder {
	b := kadm.NewACLs().Allow("User:" + user).AllowHosts("*").Operations(g.Ops...)
	switch g.Type {
	case kmsg.ACLResourceTypeTopic:
		b = b.Topics(g.Name)
	case kmsg.ACLResourceTypeGroup:
		b = b.Groups(g.Name)
	case kmsg.ACLResourceTypeTransactionalId:
		b = b.TransactionalIDs(g.Name)
	case kmsg.ACLResourceTypeCluster:
		b = b.Clusters()
	}
	if g.Prefixed {
		b = b.ResourcePatternType(kadm.ACLPatternPrefixed)
	} else {
		b = b.ResourcePatternType(kadm.ACLPatternLiteral)
	}
	return b
}

// missingOps returns the operations of g that no ALLOW ACL of user grants
// on exactly g's resource and pattern.
func missingOps(ctx context.Context, adm *kadm.Client, user string, g Grant) ([]kadm.ACLOperation, error) {
	rs, err := adm.DescribeACLs(ctx, builder(user, g))
	if err != nil {
		return nil, err
	}
	have := map[kadm.ACLOperation]bool{}
	for _, r := range rs {
		if r.Err != nil {
			return nil, fmt.Errorf("describe ACLs: %w: %s", r.Err, r.ErrMessage)
		}
		for _, d := range r.Described {
			if d.Permission == kmsg.ACLPermissionTypeAllow && d.Name == g.Name && d.Host == "*" {
				have[d.Operation] = true
			}
		}
	}
	var missing []kadm.ACLOperation
	for _, op := range g.Ops {
		if !have[op] {
			missing = append(missing, op)
		}
	}
	return missing, nil
}

// ensureUser makes p.User log in with p.Password: "unchanged" when it
// already does, else the credentials are upserted ("created" for a new
// user, "password set" otherwise).
func ensureUser(ctx context.Context, adm *kadm.Client, kc kafkax.Config, p Principal) (string, error) {
	if err := tryLogin(ctx, kc, p.User, p.Password); err == nil {
		return "unchanged", nil
	} else if !errors.Is(err, kerr.SaslAuthenticationFailed) {
		return "", fmt.Errorf("log in as %s: %w", p.User, err)
	}
	state := "password set"
	ds, err := adm.DescribeUserSCRAMs(ctx, p.User)
	if err != nil {
		return "", fmt.Errorf("describe: %w", err)
	}
	if d, ok := ds[p.User]; !ok || errors.Is(d.Err, kerr.ResourceNotFound) || len(d.CredInfos) == 0 {
		state = "created"
	}
	as, err := adm.AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{{User: p.User, Mechanism: kadm.ScramSha512, Iterations: 8192, Password: p.Password}})
	if err == nil {
		err = as.Error()
	}
	if err != nil {
		return "", fmt.Errorf("set credentials: %w", err)
	}
	// The brokers learn new credentials through the metadata log: wait
	// until the user can log in, so that a stage started next succeeds.
	for {
		lerr := tryLogin(ctx, kc, p.User, p.Password)
		if lerr == nil {
			return state, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("credentials set, but the user cannot log in yet: %w", lerr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tryLogin connects as user over kc's listener and asks for metadata.
func tryLogin(ctx context.Context, kc kafkax.Config, user, password string) error {
	kc.SASL = kafkax.SASL{Mechanism: kafkax.MechanismSCRAMSHA512, Username: user, Password: password}
	cl, err := kgo.NewClient(kc.Opts(kgo.RetryTimeout(5 * time.Second))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = kadm.NewClient(cl).BrokerMetadata(lctx)
	return err
}
