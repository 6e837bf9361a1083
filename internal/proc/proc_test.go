package proc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sh starts /bin/sh -c script with env.
func sh(t *testing.T, env []string, script string) *Proc {
	t.Helper()
	p, err := Start(Config{Name: "sh", Path: "/bin/sh", Args: []string{"-c", script}, Env: env,
		LogPath: filepath.Join(t.TempDir(), "sh.log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

func TestEnvironmentIsExplicit(t *testing.T) {
	t.Setenv("IOTPIPE_LEAK_CHECK", "leaked")
	p := sh(t, []string{"IOTPIPE_GIVEN=given"}, `echo "given=$IOTPIPE_GIVEN leak=$IOTPIPE_LEAK_CHECK"`)
	l, err := p.WaitLine(t.Context(), "given=", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if l != "given=given leak=" {
		t.Fatalf("child saw %q; want only the explicit variable", l)
	}
	<-p.Done()
	if p.ExitCode() != 0 {
		t.Fatalf("exit %d", p.ExitCode())
	}
	b, err := os.ReadFile(p.LogPath())
	if err != nil || !strings.Contains(string(b), "given=given") {
		t.Fatalf("log file %q (%v)", b, err)
	}
}

func TestWaitLineAdvances(t *testing.T) {
	p := sh(t, nil, `echo a 1; echo b; echo a 2 >&2; exec sleep 60`)
	ctx := t.Context()
	for _, want := range []string{"a 1", "a 2"} {
		l, err := p.WaitLine(ctx, "a ", 5*time.Second)
		if err != nil || l != want {
			t.Fatalf("WaitLine = %q, %v; want %q", l, err, want)
		}
	}
	if _, err := p.WaitLine(ctx, "a ", 100*time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Fatalf("third WaitLine: %v, want ErrTimeout", err)
	}
	if n := p.Count("a "); n != 2 {
		t.Fatalf("Count = %d", n)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := p.WaitLine(cctx, "never", time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled WaitLine: %v", err)
	}
}

func TestWaitLineExited(t *testing.T) {
	p := sh(t, nil, `echo bye; exit 3`)
	if _, err := p.WaitLine(t.Context(), "never", 10*time.Second); !errors.Is(err, ErrExited) {
		t.Fatalf("WaitLine: %v, want ErrExited", err)
	}
	if p.ExitCode() != 3 || p.Err() == nil {
		t.Fatalf("exit %d, err %v", p.ExitCode(), p.Err())
	}
}

func TestStopReportsExitCode(t *testing.T) {
	p := sh(t, nil, `trap 'echo term; exit 7' TERM; echo ready; while :; do sleep 0.05; done`)
	if _, err := p.WaitLine(t.Context(), "ready", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	code, err := p.Stop(5 * time.Second)
	if err != nil || code != 7 {
		t.Fatalf("Stop = %d, %v; want 7, nil", code, err)
	}
	if p.Count("term") != 1 {
		t.Fatalf("log:\n%s", p.Log())
	}
}

func TestStopKillsAfterBound(t *testing.T) {
	p := sh(t, nil, `trap '' TERM; echo ready; while :; do sleep 0.05; done`)
	if _, err := p.WaitLine(t.Context(), "ready", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	code, err := p.Stop(200 * time.Millisecond)
	if !errors.Is(err, ErrTimeout) || code != -1 {
		t.Fatalf("Stop = %d, %v; want -1, ErrTimeout", code, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Stop took %s", d)
	}
	if !p.Exited() {
		t.Fatal("still running after Stop")
	}
}

func TestKeepsLastLines(t *testing.T) {
	p := sh(t, nil, `i=0; while [ $i -lt 20010 ]; do echo line $i; i=$((i+1)); done`)
	<-p.Done()
	if n := p.Count("line "); n != MaxLines {
		t.Fatalf("kept %d lines, want %d", n, MaxLines)
	}
	if got := p.Tail(1); got != "line 20009" {
		t.Fatalf("Tail(1) = %q", got)
	}
	// The cursor starts at the oldest kept line.
	if l, err := p.WaitLine(t.Context(), "line ", time.Second); err != nil || l != "line 10" {
		t.Fatalf("WaitLine = %q, %v", l, err)
	}
}
