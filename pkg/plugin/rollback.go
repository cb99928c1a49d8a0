package plugin

// rollback is the undo stack of an ADD: each side effect pushes its undo
// right after it succeeds; a failed ADD runs them newest first.
type rollback struct{ undos []func() error }

func (r *rollback) push(undo func() error) { r.undos = append(r.undos, undo) }

// run undoes everything pushed so far; errors are logged by the caller
// since the ADD error is what the runtime must see.
func (r *rollback) run() []error {
	var errs []error
	for i := len(r.undos) - 1; i >= 0; i-- {
		if err := r.undos[i](); err != nil {
			errs = append(errs, err)
		}
	}
	r.undos = nil
	return errs
}
