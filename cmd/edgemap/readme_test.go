package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// demoStep is one `$ ` line of the README's demo and the lines shown
// under it: line is where the command is (1-based), out the lines of its
// output in the README (indices lines[first:first+len(out)]).
type demoStep struct {
	line  int
	cmd   string
	first int
	out   []string
}

// readmeDemo returns README.md's lines and the steps of its "Try the
// demo" section: every ```console block up to the next "## " heading.
// A step is a line starting with "$ " (a trailing "  # comment" is not
// run) and the lines after it up to the next step or the block's end,
// trailing blank lines left out.
func readmeDemo(t *testing.T, path string) ([]string, []demoStep) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	comment := regexp.MustCompile(`\s{2,}# .*$`)
	var steps []demoStep
	inSection, inBlock := false, false
	for i, l := range lines {
		switch {
		case l == "## Try the demo":
			inSection = true
		case inSection && strings.HasPrefix(l, "## "):
			inSection = false
		case !inSection:
		case l == "```console":
			inBlock = true
		case inBlock && l == "```":
			inBlock = false
		case inBlock && strings.HasPrefix(l, "$ "):
			steps = append(steps, demoStep{line: i + 1, cmd: comment.ReplaceAllString(l[2:], ""), first: i + 1})
		case inBlock && len(steps) > 0:
			steps[len(steps)-1].out = append(steps[len(steps)-1].out, l)
		}
	}
	for i := range steps {
		for n := len(steps[i].out); n > 0 && strings.TrimSpace(steps[i].out[n-1]) == ""; n-- {
			steps[i].out = steps[i].out[:n-1]
		}
	}
	return lines, steps
}

// makeRunArgs is the serve command line of the Makefile's run target,
// its variables replaced by the Makefile's defaults: `make run` as the
// README's reader runs it.
func makeRunArgs(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	var recipe []string
	inRun := false
	sc := bufio.NewScanner(strings.NewReader(strings.ReplaceAll(string(raw), "\\\n", " ")))
	for sc.Scan() {
		l := sc.Text()
		if m := regexp.MustCompile(`^(\w+)\s*[?:]?=\s*(.*)$`).FindStringSubmatch(l); m != nil {
			vars[m[1]] = strings.TrimSpace(m[2])
		}
		switch {
		case strings.HasPrefix(l, "run:"):
			inRun = true
		case inRun && strings.HasPrefix(l, "\t"):
			recipe = append(recipe, strings.TrimSpace(l))
		case inRun:
			inRun = false
		}
	}
	if len(recipe) != 1 {
		t.Fatalf("%s: the run target has %d command lines, want 1 (serve): %q", path, len(recipe), recipe)
	}
	args := strings.Fields(regexp.MustCompile(`\$\((\w+)\)`).ReplaceAllStringFunc(recipe[0], func(v string) string {
		return vars[v[2:len(v)-1]]
	}))
	if len(args) < 2 || args[0] != "bin/edgemap" || args[1] != "serve" {
		t.Fatalf("%s: the run target is %q, not bin/edgemap serve", path, recipe[0])
	}
	return args[1:]
}

// demoNormal is how the demo's outputs are compared: runs of spaces and
// tabs as one space (dig's tabs, the CLI's padded columns), and what
// differs from run to run replaced, in the README's text as in the
// output: dig's message id, the event log's times and the CLI's user
// agent.
var demoNormal = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`[ \t]+`), " "},
	{regexp.MustCompile(`\bid: \d+`), "id: ID"},
	{regexp.MustCompile(`\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\b`), "TIME"},
	{regexp.MustCompile(`\bedgemap/\S+ \([^)@]*@[^)]*\)`), "edgemap/VERSION (USER@HOST)"},
}

func normalDemo(lines []string) string {
	var out []string
	for _, l := range lines {
		for _, n := range demoNormal {
			l = n.re.ReplaceAllString(l, n.with)
		}
		out = append(out, strings.TrimSpace(l))
	}
	return strings.Join(out, "\n")
}

// TestReadmeDemo runs README.md's "Try the demo" against `make run`'s
// server (the Makefile's serve arguments: testdata/world.yaml, the test
// GeoIP database, node id demo; a fresh database) and compares each
// command's output with what the README shows under it, normalized as
// demoNormal says. Commands run from a directory laid out like the
// checkout (bin/edgemap, testdata, var), with the real dig against the
// server's DNS port and EDGEMAP_API naming its admin API; both listen on
// free ports, which the outputs show as the README's 5353 and 8053.
// -update rewrites the README's outputs with what the commands print.
func TestReadmeDemo(t *testing.T) {
	dig, err := exec.LookPath("dig")
	if err != nil {
		t.Skip("no dig: install Debian's dnsutils (.ci/run does) to run the README's demo")
	}
	lines, steps := readmeDemo(t, "../../README.md")
	// The parser must find the walkthrough: an empty section would pass.
	kinds := map[string]int{}
	for _, s := range steps {
		kinds[strings.Fields(s.cmd)[0]]++
	}
	if len(steps) < 20 || kinds["dig"] < 10 || kinds["bin/edgemap"] < 10 || len(kinds) != 2 {
		t.Fatalf("README.md's demo has %d steps (%v); want at least 10 dig and 10 bin/edgemap lines and nothing else", len(steps), kinds)
	}

	dir := t.TempDir()
	for _, d := range []string{"bin", "var"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	testdata, err := filepath.Abs("../../testdata")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(edgemapBinary(t), filepath.Join(dir, "bin", "edgemap")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(testdata, filepath.Join(dir, "testdata")); err != nil {
		t.Fatal(err)
	}
	dnsAddr, apiAddr := freeAddr(t, "127.0.0.1"), freeAddr(t, "127.0.0.1")
	args := makeRunArgs(t, "../../Makefile")
	line := strings.Join(args, " ")
	for _, want := range []string{"--listen 127.0.0.1:5353", "--api-listen 127.0.0.1:8053"} {
		if !strings.Contains(line, want) {
			t.Fatalf("make run's serve has no %s: %s", want, line)
		}
	}
	for i, a := range args {
		args[i] = strings.NewReplacer("127.0.0.1:5353", dnsAddr, "127.0.0.1:8053", apiAddr).Replace(a)
	}
	// The environment of a reader's shell, without settings of its own:
	// no EDGEMAP_ variables, no ~/.digrc.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EDGEMAP_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	env = append(env, "HOME="+dir)

	serve := exec.Command(filepath.Join(dir, "bin", "edgemap"), args...)
	serve.Dir, serve.Env = dir, env
	var serveLog strings.Builder
	serve.Stdout, serve.Stderr = &serveLog, &serveLog
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	t.Cleanup(func() {
		serve.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			serve.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("edgemap %s\n%s", strings.Join(args, " "), serveLog.String())
		}
	})
	// Ready as a load balancer sees it: a zone and a published map. The
	// bound is generous for a loaded CI machine; it takes well under 1 s.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + apiAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("serve exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not healthy within 30 s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	env = append(env, "EDGEMAP_API=http://"+apiAddr)

	ports := strings.NewReplacer(dnsAddr, "127.0.0.1:5353", apiAddr, "127.0.0.1:8053")
	for i, s := range steps {
		argv := splitArgs(t, strings.Replace(s.cmd, "-p 5353", "-p "+strings.TrimPrefix(dnsAddr, "127.0.0.1:"), 1))
		var cmd *exec.Cmd
		if argv[0] == "dig" {
			cmd = exec.Command(dig, argv[1:]...)
		} else {
			cmd = exec.Command(filepath.Join(dir, "bin", "edgemap"), argv[1:]...)
		}
		cmd.Dir, cmd.Env = dir, env
		raw, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("README.md:%d: %s: %v\n%s", s.line, s.cmd, err, raw)
			continue
		}
		got := strings.Split(strings.TrimRight(ports.Replace(string(raw)), "\n"), "\n")
		if *update {
			for j := range got {
				got[j] = strings.TrimRight(got[j], " \t") // the tables' padding
			}
			steps[i].out = got
			continue
		}
		if normalDemo(got) != normalDemo(s.out) {
			t.Errorf("README.md:%d: %s\n--- printed\n%s\n--- README shows\n%s", s.line, s.cmd, strings.Join(got, "\n"), strings.Join(s.out, "\n"))
		}
	}
	if *update {
		var out []string
		next := 0
		for _, s := range steps {
			out = append(out, lines[next:s.first]...)
			out = append(out, s.out...)
			next = s.first
			// Skip the README's old output, up to the next step or the
			// block's end.
			for next < len(lines) && !strings.HasPrefix(lines[next], "$ ") && lines[next] != "```" {
				next++
			}
		}
		out = append(out, lines[next:]...)
		if err := os.WriteFile("../../README.md", []byte(strings.Join(out, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Println("README.md: the demo's outputs rewritten")
	}
}
