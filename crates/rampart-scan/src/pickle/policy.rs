//! Which imports a pickle may make. Default deny: a small allow list of what PyTorch, NumPy, scikit-learn/joblib and
//! the standard containers legitimately store; a list of code-execution primitives that are critical; everything
//! else is a finding of its own.

/// What an import means for the file that makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Ordinary model content.
    Allowed,
    /// Allowed, and its argument is itself a serialized object to scan (`torch.storage._load_from_bytes`).
    NestedLoader,
    /// Runs code, touches the system or loads further pickles: critical.
    Dangerous(&'static str),
    /// Reaches past an allowed module through a dunder attribute (`numpy.__builtins__`): critical.
    AttributeEscape,
    /// Not on the allow list: a finding, never silently accepted.
    Unknown,
}

/// Modules whose every name is dangerous, with why. A module matches itself and its submodules.
const DANGEROUS_MODULES: &[(&str, &str)] = &[
    ("os", "runs commands and touches the file system"),
    ("posix", "runs commands and touches the file system"),
    ("nt", "runs commands and touches the file system"),
    ("posixpath", "file-system access"),
    ("ntpath", "file-system access"),
    ("subprocess", "runs commands"),
    ("_posixsubprocess", "runs commands"),
    ("_subprocess", "runs commands"),
    ("commands", "runs commands"),
    ("popen2", "runs commands"),
    ("pty", "spawns a shell"),
    ("sys", "reaches the interpreter's modules and state"),
    ("shutil", "copies and deletes files"),
    ("socket", "opens network connections"),
    ("ssl", "opens network connections"),
    ("asyncio", "runs commands and opens connections"),
    ("runpy", "runs Python modules and files"),
    ("importlib", "imports arbitrary code"),
    ("imp", "imports arbitrary code"),
    ("pkgutil", "imports arbitrary code"),
    ("zipimport", "imports arbitrary code"),
    ("marshal", "turns bytes into code objects"),
    ("types", "builds functions from code objects"),
    ("code", "runs Python source"),
    ("codeop", "compiles Python source"),
    ("pdb", "runs Python source in the debugger"),
    ("bdb", "runs Python source in the debugger"),
    ("timeit", "runs Python source given as a string"),
    (
        "pydoc",
        "imports arbitrary modules (pydoc.locate) and runs pagers",
    ),
    ("pip", "installs and runs packages"),
    ("setuptools", "runs build scripts"),
    ("distutils", "runs build scripts and commands"),
    (
        "multiprocessing",
        "starts processes and unpickles their data",
    ),
    ("concurrent", "starts processes"),
    ("threading", "starts threads running arbitrary callables"),
    ("_thread", "starts threads running arbitrary callables"),
    ("ctypes", "calls native code"),
    ("_ctypes", "calls native code"),
    ("cffi", "calls native code"),
    ("webbrowser", "runs a browser"),
    ("platform", "runs commands (platform.popen)"),
    ("signal", "changes process signal handling"),
    ("requests", "opens network connections"),
    ("urllib", "opens network connections"),
    ("urllib2", "opens network connections"),
    ("urllib3", "opens network connections"),
    ("http", "opens network connections"),
    ("httplib", "opens network connections"),
    ("ftplib", "opens network connections"),
    ("smtplib", "opens network connections"),
    ("telnetlib", "opens network connections"),
    ("paramiko", "opens remote shells"),
    ("aiohttp", "opens network connections"),
    ("pickle", "unpickles nested data with no checks"),
    ("_pickle", "unpickles nested data with no checks"),
    ("cPickle", "unpickles nested data with no checks"),
    ("pickletools", "unpickles nested data"),
    ("dill", "unpickles nested data and code"),
    ("cloudpickle", "unpickles nested data and code"),
    ("shelve", "unpickles nested data"),
    ("operator", "reaches attributes and calls methods by name"),
    ("_operator", "reaches attributes and calls methods by name"),
    ("functools", "wraps and calls arbitrary callables"),
    ("inspect", "reaches frames and globals"),
    ("gc", "reaches every live object"),
    ("site", "runs site hooks"),
    ("builtins.__import__", "imports arbitrary modules"),
    ("idlelib", "runs Python source"),
    ("ensurepip", "installs and runs packages"),
    ("venv", "creates environments and runs pip"),
    ("cProfile", "runs Python source (cProfile.run)"),
    ("profile", "runs Python source (profile.run)"),
    ("trace", "runs Python source"),
    ("doctest", "runs Python source"),
    ("io", "opens files"),
    ("_io", "opens files"),
    ("codecs.open", "opens files"),
    ("fileinput", "opens files"),
    ("linecache", "reads files"),
    ("tempfile", "creates files"),
    ("glob", "lists files"),
    ("zipfile", "reads and extracts archives"),
    ("tarfile", "reads and extracts archives"),
    ("sqlite3", "opens database files"),
    ("dbm", "opens database files"),
    ("logging.config", "runs code from configuration sockets"),
    ("xmlrpc", "makes network calls"),
    ("socketserver", "opens network servers"),
    ("wsgiref", "opens network servers"),
    ("poplib", "opens network connections"),
    ("imaplib", "opens network connections"),
    ("nntplib", "opens network connections"),
    ("mailcap", "runs commands"),
    ("pipes", "runs commands"),
    ("uuid._get_command_stdout", "runs commands"),
    ("uuid._popen", "runs commands"),
    ("_osx_support", "runs commands"),
    ("_aix_support", "runs commands"),
    ("_pyrepl", "runs Python source"),
    ("_winapi", "calls the Windows API"),
    ("msvcrt", "calls the C runtime"),
    ("winreg", "changes the Windows registry"),
    ("_winreg", "changes the Windows registry"),
    ("tkinter", "runs Tcl code"),
    ("_tkinter", "runs Tcl code"),
    ("torch.hub", "downloads and runs code"),
    ("torch.jit", "loads and runs TorchScript"),
    ("torch.package", "loads and runs packaged code"),
    (
        "torch.utils.cpp_extension",
        "compiles and loads native code",
    ),
    (
        "torch.serialization",
        "loads nested checkpoints with no checks",
    ),
    ("torch._dynamo", "compiles and runs code"),
    ("torch._inductor", "compiles and runs code"),
    (
        "torch.distributed",
        "opens network connections and runs remote calls",
    ),
    ("numpy.f2py", "compiles and loads native code"),
    ("numpy.distutils", "runs build commands"),
    (
        "numpy.testing",
        "runs Python source (numpy.testing._private.utils.runstring)",
    ),
    ("numpy.lib.npyio", "loads nested pickles"),
    ("joblib.load", "loads nested pickles"),
    ("joblib.numpy_pickle.load", "loads nested pickles"),
    ("joblib._memmapping_reducer", "touches the file system"),
    ("pandas.io.pickle", "loads nested pickles"),
    ("pandas.read_pickle", "loads nested pickles"),
    (
        "keras.models.load_model",
        "loads models that may carry code",
    ),
    ("tensorflow.io", "touches the file system"),
    (
        "tensorflow.compat",
        "reaches file-system and code-running ops",
    ),
];

/// Names that are dangerous in otherwise harmless modules (`module.name` exactly).
const DANGEROUS_NAMES: &[(&str, &str)] = &[
    ("builtins.eval", "evaluates Python source"),
    ("builtins.exec", "runs Python source"),
    ("builtins.execfile", "runs a Python file"),
    ("builtins.compile", "compiles Python source"),
    ("builtins.open", "opens files"),
    ("builtins.file", "opens files"),
    ("builtins.input", "reads from the terminal"),
    ("builtins.getattr", "reaches any attribute"),
    ("builtins.setattr", "changes any attribute"),
    ("builtins.delattr", "deletes any attribute"),
    ("builtins.globals", "reaches the interpreter's globals"),
    ("builtins.locals", "reaches the interpreter's locals"),
    ("builtins.vars", "reaches an object's namespace"),
    ("builtins.breakpoint", "starts the debugger"),
    ("builtins.apply", "calls any callable"),
    ("builtins.reload", "reloads modules"),
    ("builtins.help", "runs pydoc"),
    ("builtins.memoryview", "exposes raw memory"),
    ("builtins.type", "builds classes"),
    ("builtins.super", "reaches parent attributes"),
    ("builtins.classmethod", "wraps callables"),
    ("builtins.staticmethod", "wraps callables"),
    ("builtins.property", "wraps callables"),
    ("builtins.map", "calls a callable over items"),
    ("builtins.filter", "calls a callable over items"),
    ("builtins.__loader__", "loads modules"),
    ("builtins.__builtins__", "reaches every builtin"),
    ("numpy.load", "loads nested pickles (allow_pickle)"),
    ("numpy.loads", "unpickles nested data"),
    ("numpy.fromfile", "reads files"),
    ("numpy.save", "writes files"),
    ("numpy.savetxt", "writes files"),
    ("numpy.loadtxt", "reads files"),
    ("numpy.genfromtxt", "reads files"),
    ("numpy.memmap", "maps files"),
    ("numpy.core.memmap", "maps files"),
    ("numpy.ctypeslib", "loads native libraries"),
    ("torch.load", "loads nested checkpoints with no checks"),
    ("torch.save", "writes files"),
    ("torch.from_file", "reads files"),
    ("torch.ops.load_library", "loads native libraries"),
    ("torch._C._jit_load", "loads TorchScript"),
    ("torch.classes.load_library", "loads native libraries"),
    ("pandas.read_csv", "reads files and URLs"),
    ("pandas.eval", "evaluates Python expressions"),
    ("scipy.io.loadmat", "reads files"),
];

/// Exact names that ordinary checkpoints store.
const ALLOWED_NAMES: &[&str] = &[
    "builtins.set",
    "builtins.frozenset",
    "builtins.slice",
    "builtins.range",
    "builtins.complex",
    "builtins.bytearray",
    "builtins.bytes",
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.int",
    "builtins.float",
    "builtins.str",
    "builtins.bool",
    "builtins.object",
    "builtins.NoneType",
    "builtins.Ellipsis",
    "builtins.NotImplemented",
    "_codecs.encode",
    "copyreg._reconstructor",
    "copyreg.__newobj__",
    "copyreg.__newobj_ex__",
    "collections.OrderedDict",
    "collections.defaultdict",
    "collections.deque",
    "collections.Counter",
    "datetime.datetime",
    "datetime.date",
    "datetime.time",
    "datetime.timedelta",
    "datetime.timezone",
    "decimal.Decimal",
    "fractions.Fraction",
    "uuid.UUID",
    "argparse.Namespace",
    "enum.Enum",
    "torch.Size",
    "torch.Tensor",
    "torch.device",
    "torch.dtype",
    "torch.layout",
    "torch.memory_format",
    "torch.strided",
    "torch.sparse_coo",
    "torch.sparse_csr",
    "torch.sparse_csc",
    "torch.sparse_bsr",
    "torch.sparse_bsc",
    "torch._mkldnn",
    "torch.contiguous_format",
    "torch.channels_last",
    "torch.channels_last_3d",
    "torch.preserve_format",
    "torch.per_tensor_affine",
    "torch.per_channel_affine",
    "torch.per_channel_affine_float_qparams",
    "torch.storage.UntypedStorage",
    "torch.storage.TypedStorage",
    "torch.storage._load_from_bytes",
    "torch.nn.parameter.Parameter",
    "torch.nn.parameter.Buffer",
    "torch.nn.parameter.UninitializedParameter",
    "torch.nn.parameter.UninitializedBuffer",
    "torch._tensor._rebuild_from_type_v2",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_sparse_tensor",
    "torch._utils._rebuild_device_tensor_from_numpy",
    "torch._utils._rebuild_meta_tensor_no_storage",
    "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_nested_tensor",
    "torch._utils._rebuild_wrapper_subclass",
    "torch._utils._rebuild_from_type",
    "torch._utils._rebuild_from_type_v2",
    "torch.serialization._get_layout",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar",
    "numpy.core.numeric._frombuffer",
    "numpy._core.numeric._frombuffer",
    "numpy.ma.core._mareconstruct",
    "numpy.ma.core.MaskedArray",
    "numpy.random._pickle.__randomstate_ctor",
    "numpy.random._pickle.__bit_generator_ctor",
    "numpy.random._pickle.__generator_ctor",
    "numpy.random.mtrand.RandomState",
    "numpy.random._mt19937.MT19937",
    "numpy.random._pcg64.PCG64",
    "numpy.random.bit_generator.SeedSequence",
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "joblib.numpy_pickle_compat.NDArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
];

/// Torch dtypes and storage classes: `torch.<name>` for these names.
const TORCH_TYPES: &[&str] = &[
    "float",
    "float32",
    "float64",
    "double",
    "float16",
    "half",
    "bfloat16",
    "complex32",
    "complex64",
    "complex128",
    "cfloat",
    "cdouble",
    "chalf",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "short",
    "int32",
    "int",
    "int64",
    "long",
    "bool",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "FloatStorage",
    "DoubleStorage",
    "HalfStorage",
    "BFloat16Storage",
    "LongStorage",
    "IntStorage",
    "ShortStorage",
    "CharStorage",
    "ByteStorage",
    "BoolStorage",
    "ComplexFloatStorage",
    "ComplexDoubleStorage",
    "QInt8Storage",
    "QUInt8Storage",
    "QInt32Storage",
    "QUInt4x2Storage",
    "QUInt2x4Storage",
];

/// NumPy scalar types: `numpy.<name>`.
const NUMPY_TYPES: &[&str] = &[
    "bool_",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "longdouble",
    "complex64",
    "complex128",
    "clongdouble",
    "str_",
    "bytes_",
    "void",
    "object_",
    "datetime64",
    "timedelta64",
    "intc",
    "uintc",
    "int_",
    "uint",
    "longlong",
    "ulonglong",
    "half",
    "single",
    "double",
    "csingle",
    "cdouble",
];

/// Python 2 module names that Python 3's unpickler maps to their new homes (`fix_imports`).
fn python3_module(module: &str) -> &str {
    match module {
        "__builtin__" | "exceptions" => "builtins",
        "copy_reg" => "copyreg",
        "cPickle" => "pickle",
        "commands" => "subprocess",
        "UserDict" | "UserList" | "UserString" => "collections",
        other => other,
    }
}

fn in_module(path: &str, module: &str) -> bool {
    path == module
        || path
            .strip_prefix(module)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Classifies `module` + `name` as the unpickler would resolve them (a dotted name walks attributes).
pub(crate) fn classify(module: &str, name: &str) -> Class {
    let module = python3_module(module);
    let full = format!("{module}.{name}");
    if let Some(&(_, why)) = DANGEROUS_NAMES.iter().find(|(n, _)| in_module(&full, n)) {
        return Class::Dangerous(why);
    }
    if let Some(&(_, why)) = DANGEROUS_MODULES
        .iter()
        .find(|(m, _)| in_module(module, m) || in_module(&full, m))
    {
        return Class::Dangerous(why);
    }
    if full == "torch.storage._load_from_bytes" {
        return Class::NestedLoader;
    }
    if ALLOWED_NAMES.contains(&full.as_str()) {
        return Class::Allowed;
    }
    // Cython's generated `__pyx_unpickle_<Class>` only restores the state of that extension class.
    let cython_family = ["numpy", "sklearn", "scipy"]
        .iter()
        .any(|m| in_module(module, m));
    if cython_family && name.starts_with("__pyx_unpickle_") && !name.contains('.') {
        return Class::Allowed;
    }
    // Past the exact allow list, any dunder or private-dunder component is a way around it.
    if full
        .split('.')
        .any(|part| part.starts_with("__") && part.len() > 2)
        || name.contains(".__")
    {
        return Class::AttributeEscape;
    }
    if name.contains('.') {
        // A dotted name walks attributes from an object the allow list vetted only by its own name.
        return Class::Unknown;
    }
    let allowed = match module {
        "torch" => TORCH_TYPES.contains(&name),
        "numpy" => NUMPY_TYPES.contains(&name),
        "numpy.dtypes" => name.ends_with("DType"),
        // Layers pickled whole with `torch.save(model)`: classes only.
        m if in_module(m, "torch.nn.modules") => is_class_name(name),
        // Estimators, trees and losses: scikit-learn stores classes, never functions.
        m if in_module(m, "sklearn") => is_class_name(name),
        m if in_module(m, "scipy.sparse") => name.ends_with("_matrix") || name.ends_with("_array"),
        _ => false,
    };
    if allowed {
        Class::Allowed
    } else {
        Class::Unknown
    }
}

fn is_class_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Callables that unpickle their argument: their payload is scanned as a nested pickle.
pub(crate) fn is_loader(module: &str, name: &str) -> bool {
    let full = format!("{}.{name}", python3_module(module));
    matches!(
        full.as_str(),
        "pickle.loads"
            | "_pickle.loads"
            | "dill.loads"
            | "cloudpickle.loads"
            | "numpy.loads"
            | "torch.storage._load_from_bytes"
            | "joblib.load"
            | "torch.load"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_known_names() {
        assert_eq!(
            classify("torch._utils", "_rebuild_tensor_v2"),
            Class::Allowed
        );
        assert_eq!(classify("collections", "OrderedDict"), Class::Allowed);
        assert_eq!(classify("__builtin__", "set"), Class::Allowed);
        assert_eq!(classify("torch", "FloatStorage"), Class::Allowed);
        assert_eq!(
            classify("torch.nn.modules.linear", "Linear"),
            Class::Allowed
        );
        assert!(matches!(classify("posix", "system"), Class::Dangerous(_)));
        assert!(matches!(classify("nt", "system"), Class::Dangerous(_)));
        assert!(matches!(
            classify("__builtin__", "eval"),
            Class::Dangerous(_)
        ));
        assert!(matches!(
            classify("builtins", "getattr"),
            Class::Dangerous(_)
        ));
        assert!(matches!(classify("pip", "main"), Class::Dangerous(_)));
        assert!(matches!(
            classify("pip._internal", "main"),
            Class::Dangerous(_)
        ));
        assert!(matches!(classify("timeit", "timeit"), Class::Dangerous(_)));
        assert!(matches!(classify("pydoc", "locate"), Class::Dangerous(_)));
        assert!(matches!(
            classify("types", "FunctionType"),
            Class::Dangerous(_)
        ));
        assert!(matches!(
            classify("numpy.testing._private.utils", "runstring"),
            Class::Dangerous(_)
        ));
        assert!(matches!(classify("torch", "load"), Class::Dangerous(_)));
        assert!(matches!(classify("cProfile", "run"), Class::Dangerous(_)));
        assert!(matches!(
            classify("uuid", "_get_command_stdout"),
            Class::Dangerous(_)
        ));
        assert_eq!(classify("uuid", "UUID"), Class::Allowed);
        assert_eq!(classify("numpy", "__builtins__"), Class::AttributeEscape);
        assert_eq!(
            classify("torch._utils", "_rebuild_tensor.__globals__"),
            Class::AttributeEscape
        );
        assert_eq!(classify("mypackage", "Thing"), Class::Unknown);
        assert_eq!(
            classify("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
            Class::Allowed
        );
        assert_eq!(
            classify("mypackage", "__pyx_unpickle_Thing"),
            Class::AttributeEscape
        );
        assert_eq!(
            classify("sklearn.linear_model", "load_stuff"),
            Class::Unknown
        );
        assert_eq!(
            classify("torch.nn.modules.linear", "Linear.__init__"),
            Class::AttributeEscape
        );
    }
}
