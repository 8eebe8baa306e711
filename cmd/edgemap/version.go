package main

import (
	"fmt"
	"io"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"
)

// version and commit are stamped by `make build` (-ldflags "-X
// main.version=v1.2.3 -X main.commit=..."): the tag `git describe --tags`
// finds, and the commit, "-dirty" with uncommitted changes. Empty when not
// stamped: then the go command's own VCS stamp is read, which builds
// without -buildvcs (go test, GOFLAGS=-buildvcs=false) lack.
var version, commit string

// buildInfo is what this binary says of itself: `edgemap version`,
// `--version` and the edgemap_build_info metric.
type buildInfo struct {
	Version   string // a release tag, or "devel"
	Commit    string // the VCS revision, or "unknown" (go test and builds outside git stamp none)
	Time      string // the commit's time (RFC 3339), "" if unknown
	Modified  bool   // built from a tree with uncommitted changes
	GoVersion string
	Platform  string
}

// pseudoVersion is what the go command makes of an untagged commit
// (v0.0.0-20261124071400-64d3e0f1c2ab+dirty): not a release.
var pseudoVersion = regexp.MustCompile(`-(0\.)?\d{14}-[0-9a-f]{12}(\+dirty)?$`)

// readBuildInfo reads the build information the go command stamps into
// every binary (module version, VCS revision, time and state).
func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Commit: "unknown", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = &debug.BuildInfo{}
	}
	if b.Version == "" {
		// `go install github.com/edgemap/edgemap/cmd/edgemap@v1.2.0` stamps
		// the tag; a build from a checkout stamps "(devel)" or a
		// pseudo-version, which says less than the commit below.
		if v := bi.Main.Version; v != "" && v != "(devel)" && !pseudoVersion.MatchString(v) {
			b.Version = v
		} else {
			b.Version = "devel"
		}
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Commit = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	if commit != "" {
		b.Commit, b.Modified = strings.CutSuffix(commit, "-dirty")
	}
	return b
}

// print writes the build information for people.
func (b buildInfo) print(w io.Writer) {
	commit := b.Commit
	switch {
	case b.Time != "" && b.Modified:
		commit += " (" + b.Time + ", with uncommitted changes)"
	case b.Time != "":
		commit += " (" + b.Time + ")"
	case b.Modified:
		commit += " (with uncommitted changes)"
	}
	fmt.Fprintf(w, "edgemap %s\ncommit  %s\ngo      %s %s\n", b.Version, commit, b.GoVersion, b.Platform)
}

// register adds edgemap_build_info{version,commit,goversion} 1 to reg, the
// usual Prometheus way to tell which build each server runs.
func (b buildInfo) register(reg prometheus.Registerer) {
	commit := b.Commit
	if b.Modified {
		commit += "-dirty"
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "edgemap_build_info", Help: "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": b.Version, "commit": commit, "goversion": b.GoVersion}})
	g.Set(1)
	reg.MustRegister(g)
}

func versionCommand() *cli.Command {
	return &cli.Command{Name: "version", Usage: "print the version, the commit and the Go version this binary was built from",
		Action: func(c *cli.Context) error {
			readBuildInfo().print(c.App.Writer)
			return nil
		}}
}
