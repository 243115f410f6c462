//! cqrs-es's bank-account example, written as any cqrs-es user writes it:
//! nothing in it knows about Strata. The SDK's adapter runs it on a Strata
//! server (`tests/e2e/sdk_cqrs.rs`); the given/when/then tests below run it
//! on cqrs-es's own test framework.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// The aggregate's state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct BankAccount {
    /// Whether the account was opened.
    pub opened: bool,
    /// The balance in cents.
    pub balance: i64,
}

/// What a client asks of an account.
#[derive(Debug, Clone, Deserialize)]
pub enum BankAccountCommand {
    /// Opens the account.
    OpenAccount {
        /// The account's id.
        account_id: String,
    },
    /// Puts money in.
    DepositMoney {
        /// Cents.
        amount: i64,
    },
    /// Takes money out, if there is enough.
    WithdrawMoney {
        /// Cents.
        amount: i64,
    },
    /// Puts several amounts in: one event each (a multi-event command).
    DepositSeveral {
        /// Cents, one deposit each.
        amounts: Vec<i64>,
    },
}

/// What happened to an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BankAccountEvent {
    /// It was opened.
    AccountOpened {
        /// The account's id.
        account_id: String,
    },
    /// Money came in.
    CustomerDepositedMoney {
        /// Cents.
        amount: i64,
        /// The balance after it.
        balance: i64,
    },
    /// Money went out.
    CustomerWithdrewCash {
        /// Cents.
        amount: i64,
        /// The balance after it.
        balance: i64,
    },
}

impl DomainEvent for BankAccountEvent {
    fn event_type(&self) -> String {
        match self {
            BankAccountEvent::AccountOpened { .. } => "AccountOpened",
            BankAccountEvent::CustomerDepositedMoney { .. } => "CustomerDepositedMoney",
            BankAccountEvent::CustomerWithdrewCash { .. } => "CustomerWithdrewCash",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// Why a command was refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum BankAccountError {
    /// Opening an open account.
    #[error("account already open")]
    AlreadyOpen,
    /// Using an account that was never opened.
    #[error("account not open")]
    NotOpen,
    /// Withdrawing more than the balance.
    #[error("funds not available")]
    InsufficientFunds,
}

impl Aggregate for BankAccount {
    const TYPE: &'static str = "bankaccount";
    type Command = BankAccountCommand;
    type Event = BankAccountEvent;
    type Error = BankAccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: BankAccountCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), BankAccountError> {
        if let BankAccountCommand::DepositSeveral { amounts } = &command {
            if !self.opened {
                return Err(BankAccountError::NotOpen);
            }
            let mut balance = self.balance;
            for &amount in amounts {
                balance += amount;
                let event = BankAccountEvent::CustomerDepositedMoney { amount, balance };
                sink.write(event, self).await;
            }
            return Ok(());
        }
        let event = match command {
            BankAccountCommand::OpenAccount { account_id } => {
                if self.opened {
                    return Err(BankAccountError::AlreadyOpen);
                }
                BankAccountEvent::AccountOpened { account_id }
            }
            _ if !self.opened => return Err(BankAccountError::NotOpen),
            BankAccountCommand::DepositMoney { amount } => {
                BankAccountEvent::CustomerDepositedMoney {
                    amount,
                    balance: self.balance + amount,
                }
            }
            BankAccountCommand::DepositSeveral { .. } => unreachable!("handled above"),
            BankAccountCommand::WithdrawMoney { amount } => {
                if amount > self.balance {
                    return Err(BankAccountError::InsufficientFunds);
                }
                BankAccountEvent::CustomerWithdrewCash {
                    amount,
                    balance: self.balance - amount,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: BankAccountEvent) {
        match event {
            BankAccountEvent::AccountOpened { .. } => self.opened = true,
            BankAccountEvent::CustomerDepositedMoney { balance, .. }
            | BankAccountEvent::CustomerWithdrewCash { balance, .. } => self.balance = balance,
        }
    }
}

#[cfg(test)]
mod given_when_then {
    use cqrs_es::test::TestFramework;

    use super::*;

    type AccountTest = TestFramework<BankAccount>;

    fn opened() -> BankAccountEvent {
        BankAccountEvent::AccountOpened {
            account_id: "a1".into(),
        }
    }

    #[tokio::test]
    async fn opening_an_account() {
        AccountTest::with(())
            .given_no_previous_events()
            .when_async(BankAccountCommand::OpenAccount {
                account_id: "a1".into(),
            })
            .await
            .then_expect_events(vec![opened()]);
    }

    #[tokio::test]
    async fn depositing_money() {
        AccountTest::with(())
            .given(vec![opened()])
            .when_async(BankAccountCommand::DepositMoney { amount: 200 })
            .await
            .then_expect_events(vec![BankAccountEvent::CustomerDepositedMoney {
                amount: 200,
                balance: 200,
            }]);
    }

    #[tokio::test]
    async fn withdrawing_what_is_there() {
        AccountTest::with(())
            .given(vec![
                opened(),
                BankAccountEvent::CustomerDepositedMoney {
                    amount: 200,
                    balance: 200,
                },
            ])
            .when_async(BankAccountCommand::WithdrawMoney { amount: 150 })
            .await
            .then_expect_events(vec![BankAccountEvent::CustomerWithdrewCash {
                amount: 150,
                balance: 50,
            }]);
    }

    #[tokio::test]
    async fn withdrawing_more_than_there_is() {
        AccountTest::with(())
            .given(vec![opened()])
            .when_async(BankAccountCommand::WithdrawMoney { amount: 1 })
            .await
            .then_expect_error(BankAccountError::InsufficientFunds);
    }

    #[tokio::test]
    async fn using_an_account_never_opened() {
        AccountTest::with(())
            .given_no_previous_events()
            .when_async(BankAccountCommand::DepositMoney { amount: 1 })
            .await
            .then_expect_error_message("account not open");
    }
}
