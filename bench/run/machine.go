package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotpipe/iotpipe/bench/result"
)

// machine describes this host; the end load average is filled at the end.
func machine() result.Machine {
	m := result.Machine{Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), LoadAvgStart: loadAvg()}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				fs := strings.Fields(rest)
				if len(fs) > 0 {
					kb, _ := strconv.ParseInt(fs[0], 10, 64)
					m.MemoryBytes = kb * 1024
				}
			}
		}
		f.Close()
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// loadAvg reads the 1, 5 and 15 minute load averages.
func loadAvg() [3]float64 {
	var out [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return out
	}
	for i, f := range strings.Fields(string(b)) {
		if i == 3 {
			break
		}
		out[i], _ = strconv.ParseFloat(f, 64)
	}
	return out
}

// firstLine runs a command (exit status ignored: `mosquitto -h` exits 3)
// and returns the first non-empty line of its combined output matching
// re (or the first line when re is nil).
func firstLine(ctx context.Context, re *regexp.Regexp, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, name, args...).CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if re == nil {
			return l
		}
		if m := re.FindStringSubmatch(l); m != nil {
			return m[len(m)-1]
		}
	}
	return "unknown"
}

// versions collects the software versions. root is the repository root.
func versions(ctx context.Context, root, goCmd string) result.Versions {
	v := result.Versions{}
	v.Go = firstLine(ctx, regexp.MustCompile(`go version (\S+)`), goCmd, "version")
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	if c, err := git("rev-parse", "HEAD"); err == nil {
		v.Commit = c
		// Tracked files changed against HEAD (untracked files do not count,
		// as with git describe --dirty). git diff does not write the index.
		cmd := exec.CommandContext(ctx, "git", "diff", "--quiet", "HEAD", "--")
		cmd.Dir = root
		v.Dirty = cmd.Run() != nil
	} else {
		v.Commit = "unknown"
	}
	state := os.Getenv("IOTPIPE_STATE_DIR")
	if state == "" {
		state = filepath.Join(root, ".state")
	}
	install := os.Getenv("IOTPIPE_INSTALL_DIR")
	if install == "" {
		install = state
	}
	// Kafka: the installed broker jar, else the version pinned in the POM.
	v.Kafka = "unknown"
	if m, _ := filepath.Glob(filepath.Join(install, "kafka", "libs", "kafka_2.13-*.jar")); len(m) > 0 {
		v.Kafka = strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m[0]), "kafka_2.13-"), ".jar")
	} else if b, err := os.ReadFile(filepath.Join(root, "scripts", "kafka", "pom.xml")); err == nil {
		if m := regexp.MustCompile(`<kafka.version>([^<]+)</kafka.version>`).FindSubmatch(b); m != nil {
			v.Kafka = string(m[1]) + " (pom.xml)"
		}
	}
	v.Java = firstLine(ctx, regexp.MustCompile(`version "([^"]+)"`), "java", "-version")
	// Mosquitto: the running broker's executable when its pid is known.
	mosq := "mosquitto"
	if b, err := os.ReadFile(filepath.Join(state, "mqtt", "pid")); err == nil {
		if exe, err := os.Readlink("/proc/" + strings.TrimSpace(string(b)) + "/exe"); err == nil {
			mosq = exe
		}
	}
	v.Mosquitto = firstLine(ctx, regexp.MustCompile(`mosquitto version (\S+)`), mosq, "-h")
	v.Kcat = firstLine(ctx, regexp.MustCompile(`^Version (\S+)`), "kcat", "-V")
	// versitygw: the version services.sh installed (`versitygw --version`
	// of a go-installed build says "git").
	v.Versitygw = "unknown"
	if b, err := os.ReadFile(filepath.Join(install, "bin", "versitygw.version")); err == nil {
		v.Versitygw = strings.TrimSpace(string(b))
	}
	v.PostgreSQL, v.TimescaleDB = "unknown", "unknown"
	if dsn := os.Getenv("IOTPIPE_PG_DSN"); dsn != "" {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(cctx, dsn); err == nil {
			defer conn.Close(context.Background())
			_ = conn.QueryRow(cctx, "SHOW server_version").Scan(&v.PostgreSQL)
			var ext string
			if err := conn.QueryRow(cctx, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").Scan(&ext); err == nil {
				v.TimescaleDB = ext
			} else if err == pgx.ErrNoRows {
				v.TimescaleDB = "plain PostgreSQL"
			}
		}
	}
	return v
}
