use std::error::Error;

#[wq::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let n: u32 = "42".parse()?;
    let doubled = wq::spawn(async move { n * 2 }).await?;
    if doubled != 84 {
        return Err("wrong answer".into());
    }
    Ok(())
}
