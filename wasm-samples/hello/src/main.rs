//! `hello`: prints its arguments and the `GREETING` environment variable, then exits 0.
//! The smallest run-to-completion workload: a pod running it reaches `Succeeded`.

fn main() {
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".to_string());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let who = if args.is_empty() { "world".to_string() } else { args.join(" ") };
    println!("{greeting}, {who}!");
    println!("args: {args:?}");
}
