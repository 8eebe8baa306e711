package mapping

import "iter"

// Targets yields the snapshot's map units, by block, with whether each has
// fresh measurements (a client inside it is answered from them). For
// dashboards and reports; not for the query path.
func (s *Snapshot) Targets() iter.Seq2[Target, bool] {
	return func(yield func(Target, bool) bool) {
		for i := range s.units {
			if !yield(s.units[i].Target, s.units[i].ranking != nil) {
				return
			}
		}
	}
}

// Properties are the snapshot's properties as configured: a copy.
func (s *Snapshot) Properties() []Property {
	out := make([]Property, len(s.props))
	for i, p := range s.props {
		out[i] = p.Property
	}
	return out
}
