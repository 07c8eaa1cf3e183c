/** The demo user's mailbox at start: enough for more than one page of the feed. */
import type { NewMessage } from "./fake-gmail.js";

export const DEMO_MESSAGES: readonly Omit<NewMessage, "to">[] = [
  { from: { name: "Priya Raman", email: "priya@northwind.test" }, subject: "Urgent: production outage on checkout", body: "Checkout has been failing since 9:10. Can you confirm the rollback plan today?" },
  { from: { name: "Marcus Lee", email: "marcus@contoso.test" }, subject: "Contract renewal for 2027", body: "Attached is the renewal contract. We need a signature before the deadline on Friday." },
  { from: { name: "Elena Petrova", email: "elena@fabrikam.test" }, subject: "Invoice #4821 is overdue", body: "Our records show invoice #4821 is 14 days overdue. Could you look into it?" },
  { from: { name: "Sam Okafor", email: "sam@adatum.test" }, subject: "Design review meeting on Thursday", body: "Can we hold the design review meeting Thursday at 14:00? I'll send the deck before." },
  { from: { name: "Julia Chen", email: "julia@tailspin.test" }, subject: "Offer letter follow-up", body: "Just checking whether you had a chance to read the offer letter we sent on Monday." },
  { from: { name: "Tom Becker", email: "tom@litware.test" }, subject: "Quick call about the Q3 roadmap", body: "Do you have 20 minutes for a call about the Q3 roadmap next week?" },
  { from: { name: "Aisha Khan", email: "aisha@proseware.test" }, subject: "Question about API rate limits", body: "We keep hitting rate limits on the export endpoint. Is there a way to raise them?" },
  { from: { name: "Diego Alvarez", email: "diego@wingtip.test" }, subject: "Deadline moved for the launch post", body: "Heads-up: marketing moved the launch post deadline to the 15th." },
  { from: { name: "Nora Svensson", email: "nora@woodgrove.test" }, subject: "Hiring panel feedback", body: "Could you send your notes on yesterday's candidate before the debrief?" },
  { from: { name: "Kenji Watanabe", email: "kenji@lucerne.test" }, subject: "Vendor security questionnaire", body: "The vendor asked for our completed security questionnaire by the end of the month." },
  { from: { name: "Lena Fischer", email: "lena@coho.test" }, subject: "Team offsite ideas", body: "Collecting ideas for the spring offsite. Anything you'd like on the agenda?" },
  { from: { name: "Omar Haddad", email: "omar@fourthcoffee.test" }, subject: "Partnership proposal", body: "We'd love to explore a partnership around the integrations marketplace." },
  { from: { name: "The Weekly Digest", email: "digest@news.test" }, subject: "Your weekly newsletter", body: "Top stories this week, plus a sale on conference tickets. Unsubscribe any time." },
];
