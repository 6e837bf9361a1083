package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/iotpipe/iotpipe/bench/result"
)

// runner runs the go commands of the suite, streaming their output.
type runner struct {
	goCmd   string
	root    string
	log     io.Writer
	timeout time.Duration // go test -timeout
	// testBins is where `go test -c -o testBins/` put the compiled test
	// binaries (<package name>.test). When a package's binary is there,
	// it runs directly (in the package directory, as go test does), which
	// spares linking it again for every stage (5-10 s each on the loaded
	// 2-core machine); otherwise go test runs.
	testBins string
}

// goBench is one `go test -bench` invocation.
type goBench struct {
	pkg       string
	pattern   string
	benchtime string
	cpu       string // -cpu; "" for the default GOMAXPROCS
	benchmem  bool
	env       []string
}

func (g goBench) args(timeout time.Duration) []string {
	a := []string{"test", "-tags", "integration", "-count", "1", "-run", "^$", "-bench", g.pattern, "-benchtime", g.benchtime,
		"-timeout", timeout.String()}
	if g.cpu != "" {
		a = append(a, "-cpu", g.cpu)
	}
	if g.benchmem {
		a = append(a, "-benchmem")
	}
	return append(a, g.pkg)
}

// binaryArgs are the arguments of the compiled test binary equivalent to
// args.
func (g goBench) binaryArgs(timeout time.Duration) []string {
	a := []string{"-test.run", "^$", "-test.bench", g.pattern, "-test.benchtime", g.benchtime, "-test.timeout", timeout.String()}
	if g.cpu != "" {
		a = append(a, "-test.cpu", g.cpu)
	}
	if g.benchmem {
		a = append(a, "-test.benchmem")
	}
	return a
}

// goTest runs one benchmark invocation, streams its output to the log and
// returns the parsed result lines (also those read before a failure).
func (r *runner) goTest(ctx context.Context, g goBench) ([]result.Bench, error) {
	args := g.args(r.timeout)
	fmt.Fprintf(r.log, "\n=== %s%s %s\n", strings.Join(append(g.env, ""), " "), r.goCmd, shellJoin(args))
	name, dir := r.goCmd, r.root
	if r.testBins != "" {
		bin := filepath.Join(r.testBins, filepath.Base(filepath.Clean(g.pkg))+".test")
		if _, err := os.Stat(bin); err == nil {
			name, dir, args = bin, filepath.Join(r.root, g.pkg), g.binaryArgs(r.timeout)
			fmt.Fprintf(r.log, "    (running the test binary compiled above: %s %s)\n", filepath.Base(bin), shellJoin(args))
		}
	}
	var benches []result.Bench
	tail := newTail(6)
	var failure []string
	inFailure := 0
	err := r.stream(ctx, g.env, func(line string) {
		if b, ok := result.ParseLine(line); ok {
			benches = append(benches, b)
		}
		tail.add(line)
		switch {
		case strings.HasPrefix(line, "--- FAIL") || strings.HasPrefix(line, "panic:"):
			failure = append(failure, strings.TrimSpace(line))
			inFailure = 4
		case inFailure > 0 && strings.HasPrefix(line, "    "):
			failure = append(failure, strings.TrimSpace(line))
			inFailure--
		default:
			inFailure = 0
		}
	}, dir, name, args...)
	if err != nil {
		detail := failure
		if len(detail) == 0 {
			detail = tail.lines()
		}
		return benches, fmt.Errorf("go test %s -bench %s: %w: %s", g.pkg, g.pattern, err, strings.Join(detail, " | "))
	}
	if len(benches) == 0 {
		return nil, fmt.Errorf("go test %s -bench %s: no benchmark ran", g.pkg, g.pattern)
	}
	return benches, nil
}

// command runs a go command (build, compile), streaming its output.
func (r *runner) command(ctx context.Context, what, name string, args ...string) error {
	fmt.Fprintf(r.log, "=== %s: %s %s\n", what, name, shellJoin(args))
	t0 := time.Now()
	err := r.stream(ctx, nil, func(string) {}, r.root, name, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	fmt.Fprintf(r.log, "bench: %s done in %s\n", what, time.Since(t0).Round(100*time.Millisecond))
	return nil
}

// stream runs name args in dir with env added, copies
// every output line to the log and hands it to each. On cancellation the
// child gets SIGINT, then SIGKILL after 15 s.
func (r *runner) stream(ctx context.Context, env []string, each func(string), dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 15 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			fmt.Fprintln(r.log, sc.Text())
			each(sc.Text())
		}
		_, _ = io.Copy(io.Discard, pr) // a line longer than the buffer: drain
	}()
	err := cmd.Wait()
	pw.Close()
	<-done
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return err
}

func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " ^$|()*?[]'\"\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// tail keeps the last n non-empty lines.
type tail struct {
	n  int
	ls []string
}

func newTail(n int) *tail { return &tail{n: n} }

func (t *tail) add(l string) {
	if strings.TrimSpace(l) == "" {
		return
	}
	t.ls = append(t.ls, strings.TrimSpace(l))
	if len(t.ls) > t.n {
		t.ls = t.ls[1:]
	}
}

func (t *tail) lines() []string { return t.ls }
