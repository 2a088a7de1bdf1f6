//! Function names as Go itself prints them.
//!
//! The funcnametab stores generic instantiations with their shape types
//! (`main.generic[go.shape.int]`); the runtime prints `main.generic[...]` in tracebacks,
//! `runtime.CallersFrames` and so in pprof profiles. We follow it (the rules of Go 1.27's
//! `funcNamePiecesForPrint`, which extend 1.21's to generic methods of generic types), so
//! one function has one name in every loupe profile whichever release built it.

/// `name` with the type arguments of generic instantiations replaced by `...`.
pub(super) fn for_print(name: &str) -> String {
    let Some(i) = name.find('[') else {
        return name.to_string();
    };
    let Some(j) = name.rfind(']') else {
        return name.to_string();
    };
    if j <= i {
        return name.to_string();
    }
    let interior = &name[i + 1..j];
    if !interior.contains('[') {
        return format!("{}[...]{}", &name[..i], &name[j + 1..]);
    }
    // A generic method of a generic type: `pkg.T[...].M[...]` -- find where the first
    // bracket group closes and the second opens.
    let mut depth = 1i32;
    let (mut rbr, mut lbr) = (None, None);
    for (k, c) in interior.char_indices() {
        match c {
            '[' => {
                depth += 1;
                if depth == 1 {
                    lbr = Some(k);
                    break;
                }
            }
            ']' => {
                depth -= 1;
                if depth < 0 {
                    break;
                }
                if depth == 0 {
                    rbr = Some(k);
                }
            }
            _ => {}
        }
    }
    if depth == 1 {
        match (rbr, lbr) {
            (Some(r), Some(l)) if l > r => {
                return format!(
                    "{}[...]{}[...]{}",
                    &name[..i],
                    &interior[r + 1..l],
                    &name[j + 1..]
                );
            }
            (None, None) => return format!("{}[...]{}", &name[..i], &name[j + 1..]),
            _ => {}
        }
    }
    name.to_string() // malformed brackets: keep the whole name
}

#[cfg(test)]
mod tests {
    use super::for_print;

    #[test]
    fn generic_names() {
        assert_eq!(for_print("main.main"), "main.main");
        assert_eq!(for_print("main.generic[go.shape.int]"), "main.generic[...]");
        assert_eq!(for_print("main.(*T[go.shape.int]).M"), "main.(*T[...]).M");
        assert_eq!(
            for_print("p.T[go.shape.int].M[go.shape.string]"),
            "p.T[...].M[...]"
        );
        assert_eq!(for_print("p.f[[]int]"), "p.f[...]");
        assert_eq!(for_print("odd]name["), "odd]name[");
    }
}
