package main

// `iotpipe tokens create|list|revoke`: the bearer tokens of iotpipe api
// (api.Tokens), in the registry's database.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/iotpipe/iotpipe/api"
)

const tokensSummary = "bearer tokens of iotpipe api: create --role admin|operator|viewer, list, revoke"

const tokensUsage = `Usage: iotpipe tokens <command> [args] [flags]

  create       make a token (--role admin|operator|viewer, --name, --ttl) and print it once
  list         the tokens: id, name, role, created, expires, revoked, last used
  revoke <id>  refuse the token from now on

Only the SHA-256 of a token's secret is stored: a lost token cannot be shown
again; revoke it and create another. Run 'iotpipe tokens <command> --help'.
`

func runTokens(ctx context.Context, env Env, args []string) error {
	if help, err := groupHelp(env, args, tokensUsage, "which tokens command? create, list or revoke"); help {
		return err
	}
	switch args[0] {
	case "create", "list", "revoke":
		return runTokensCmd(ctx, env, args[0], args[1:])
	}
	return &UsageError{fmt.Errorf("unknown tokens command %q (see iotpipe tokens --help)", args[0])}
}

func runTokensCmd(ctx context.Context, env Env, cmd string, args []string) error {
	var r registryFlags
	var role, name string
	var ttl time.Duration
	var asJSON bool
	help := map[string]string{
		"create": "Make a bearer token for iotpipe api and print it (only now: it is stored hashed).",
		"list":   "List the API's tokens (never their secrets).",
		"revoke": "Revoke a token by its id (iotpipe tokens list): the API refuses it from the next request.",
	}[cmd]
	f := newCmdFlags(env, "iotpipe tokens "+cmd, help)
	r.bind(f, false)
	if cmd == "create" {
		f.Group("Token")
		f.String(&role, "role", "", "admin (everything), operator (shadows, configuration, attributes) or viewer (read only)")
		f.String(&name, "name", "", "what the token is for")
		f.Duration(&ttl, "ttl", 0, "the token expires after this long (0: never)")
		f.Bool(&asJSON, "json", false, "print the token and its description as JSON")
	}
	var id string
	if cmd == "revoke" {
		var perr error
		id, args, perr = positional(args, "the token id (iotpipe tokens list)")
		if err := parseAfterPositional(env, f, args, perr); err != nil {
			return err
		}
	} else if err := f.Parse(args, env.Stdout); err != nil {
		return usageErr(err)
	}
	errs := []error{r.check()}
	var rl api.Role
	if cmd == "create" {
		var err error
		if rl, err = api.ParseRole(role); err != nil {
			errs = append(errs, settingErr("role", role, errors.New("want admin, operator or viewer")))
		}
		if ttl < 0 {
			errs = append(errs, settingErr("ttl", ttl.String(), errors.New("must not be negative")))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return &UsageError{err}
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	pool, err := pgxpool.New(ctx, r.dsn)
	if err != nil {
		return fmt.Errorf("cannot reach the database at %s: %w", settingName("pg-registry-dsn"), err)
	}
	defer pool.Close()
	t := api.NewTokens(pool, r.schema)
	switch cmd {
	case "create":
		secret, tok, err := t.Create(ctx, name, rl, ttl)
		if err != nil {
			return err
		}
		if asJSON {
			type created struct {
				Secret string `json:"token"`
				api.Token
			}
			return json.NewEncoder(env.Stdout).Encode(created{secret, tok})
		}
		fmt.Fprintf(env.Stdout, "%s\n", secret)
		fmt.Fprintf(env.Stderr, "token %s (%s) created; it is shown only now: keep it secret\n", tok.ID, tok.Role)
	case "list":
		toks, err := t.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tROLE\tCREATED\tEXPIRES\tREVOKED\tLAST USED")
		ts := func(p *time.Time) string {
			if p == nil {
				return "-"
			}
			return p.UTC().Format(time.RFC3339)
		}
		for _, k := range toks {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Role, ts(&k.CreatedAt), ts(k.ExpiresAt), ts(k.RevokedAt), ts(k.LastUsedAt))
		}
		return tw.Flush()
	case "revoke":
		if err := t.Revoke(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "token %s revoked\n", id)
	}
	return nil
}
