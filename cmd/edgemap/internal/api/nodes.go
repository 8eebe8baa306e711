package api

import (
	"net"
	"net/http"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/probe"
)

// nodes answers GET /v1/nodes to an operator (the token, as every admin
// endpoint) or to a probe agent (a request signed with its key, as
// GET /v1/targets): agents given one collector find the others here.
func (a *api) nodes() http.Handler {
	admin := a.admin(a.listNodes)
	agent := a.browserSafe(false, a.collector.Signed(a.listNodes))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(probe.HeaderKey) != "" {
			agent.ServeHTTP(w, r)
			return
		}
		admin.ServeHTTP(w, r)
	})
}

func (a *api) listNodes(w http.ResponseWriter, r *http.Request) {
	if a.fleet == nil {
		self := a.self
		if addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			self.API = "http://" + addr.String() // where this request reached it
		}
		st := a.n.Status()
		self.Revision, self.Serial, self.MapBuilt, self.Self = st.Revision, st.Serial, st.MapBuilt, true
		probe.WriteJSON(w, http.StatusOK, config.Nodes{Revision: st.Revision, Nodes: []config.Node{self}})
		return
	}
	h := a.fleet.Health()
	out := config.Nodes{Fleet: true, Etcd: h.Etcd, Revision: uint64(h.Head), Nodes: a.fleet.Members()}
	for i := range out.Nodes {
		nd := &out.Nodes[i]
		nd.Self = nd.ID == a.self.ID
		nd.Behind = nd.Revision < out.Revision
	}
	probe.WriteJSON(w, http.StatusOK, out)
}
